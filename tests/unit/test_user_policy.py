"""What an astronomer's credentials reach (the inline policy create-user attaches,
lsstctl.domain.policies.user_policy): the control plane's API, a shell on their own clusters'
head nodes, their own archived results — and nothing of anyone else's.

Evaluated with the IAM semantics written down in test_head_node_policy.py (moto's IAM does
not evaluate conditions on resource tags or request keys, so its simulator cannot judge this).
"""

from __future__ import annotations

import pytest

from lsstctl.domain.policies import user_policy
from tests.unit.test_head_node_policy import allows

API = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/*"
BUCKET = "lsstctl-archive-123456789012-us-east-1"


def can(owner: str, action: str, resource: str, **context: str) -> bool:
    policy = user_policy(owner=owner, region="us-east-1", api_arn=API, archive_bucket=BUCKET)
    return allows(
        policy, action=action, resource=resource, context={"aws:username": f"lsst-{owner}", **context}, tags={}
    )


@pytest.mark.parametrize(
    "resource, allowed",
    [
        ("arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/api/GET/clusters", True),
        ("arn:aws:execute-api:us-east-1:123456789012:zzzzzzzzzz/api/GET/anything", False),  # another API
    ],
)
def test_the_api_and_no_other(resource: str, allowed: bool) -> None:
    assert can("alice", "execute-api:Invoke", resource) is allowed


@pytest.mark.parametrize("instance_owner, allowed", [("alice", True), ("bob", False), ("alice2", False), (None, False)])
def test_a_shell_on_own_head_nodes_only(instance_owner: str | None, allowed: bool) -> None:
    tags = {"aws:ResourceTag/lsstctl:owner": instance_owner} if instance_owner else {}
    assert can("alice", "ssm:StartSession", "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc", **tags) is allowed


def test_sessions_are_own_ones_only() -> None:
    mine = "arn:aws:ssm:us-east-1:123456789012:session/lsst-alice-0a1b2c"
    theirs = "arn:aws:ssm:us-east-1:123456789012:session/lsst-bob-0a1b2c"
    assert can("alice", "ssm:TerminateSession", mine) and not can("alice", "ssm:TerminateSession", theirs)


@pytest.mark.parametrize(
    "key, allowed",
    [
        ("alice/rubin-demo/g1/j-1/output.fits", True),
        ("bob/rubin-demo/g1/j-1/output.fits", False),
        ("alice2/x/output.fits", False),  # a name that starts with the owner's is someone else's prefix
        ("alice", False),
    ],
)
def test_results_of_own_prefix_only(key: str, allowed: bool) -> None:
    assert can("alice", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/{key}") is allowed
    assert can("alice", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/{key}") is False  # results are read-only to users


@pytest.mark.parametrize(
    "prefix, allowed", [("alice/", True), ("alice/rubin-demo/", True), ("bob/", False), ("", False)]
)
def test_listing_own_prefix_only(prefix: str, allowed: bool) -> None:
    assert can("alice", "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", **{"s3:prefix": prefix}) is allowed


@pytest.mark.parametrize(
    "action, resource",
    [
        ("ec2:TerminateInstances", "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"),
        ("ssm:SendCommand", "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"),
        (
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:lsstctl/users/alice-AbCdEf",
        ),
        ("iam:CreateAccessKey", "arn:aws:iam::123456789012:user/lsstctl/lsst-alice"),
        ("states:StartExecution", "arn:aws:states:us-east-1:123456789012:stateMachine:lsstctl-teardown"),
    ],
)
def test_nothing_around_the_control_plane(action: str, resource: str) -> None:
    assert not can("alice", action, resource, **{"aws:ResourceTag/lsstctl:owner": "alice"})
