"""The key secret's resource policy, evaluated as IAM would for the callers that matter."""

from __future__ import annotations

import fnmatch
from typing import Any

from lsstctl.domain.policies import key_secret_policy

ACCOUNT = "123456789012"
USER = f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/AlicePipelines"
SSO = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Astronomers_0a1b"


def denied(policy: dict[str, Any], principal_arn: str, userid: str) -> bool:
    """Whether a Deny statement applies (conditions: StringEquals, StringNotEquals, StringNotLike)."""
    context = {"aws:PrincipalArn": principal_arn, "aws:userid": userid}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Deny" and statement["Action"] == "secretsmanager:GetSecretValue"
        applies = True
        for operator, tests in statement["Condition"].items():
            for key, values in tests.items():
                values = values if isinstance(values, list) else [values]
                holds = {
                    "StringEquals": context[key] in values,
                    "StringNotEquals": context[key] not in values,
                    "StringNotLike": not any(fnmatch.fnmatchcase(context[key], v) for v in values),
                }[operator]
                applies = applies and holds
        if applies:
            return True
    return False


def test_only_the_owners_principals_and_sessions_may_read_the_key() -> None:
    policy = key_secret_policy(owner="alice", readers=[USER, ROLE], session_roles=[SSO])
    assert not denied(policy, USER, "AIDAEXAMPLEUSER")
    assert not denied(policy, ROLE, "AROAROLE:nightly")  # every session of a role acting as alice
    assert not denied(policy, SSO, "AROASSO:alice")  # alice's own session of the SSO role
    assert denied(policy, SSO, "AROASSO:bob")  # bob's session of the same role
    assert denied(policy, f"arn:aws:iam::{ACCOUNT}:role/lsstctl-api", "AROAAPI:lsstctl-api")  # the control plane
    assert denied(policy, f"arn:aws:iam::{ACCOUNT}:role/Admin", "AROAADMIN:admin")  # admins too
    assert denied(policy, f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-bob", "AIDABOB")
    assert denied(policy, f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT)


def test_without_trusted_session_roles_there_is_one_statement() -> None:
    policy = key_secret_policy(owner="alice", readers=[USER], session_roles=[])
    assert len(policy["Statement"]) == 1
    assert policy["Statement"][0]["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": [USER]}}
