"""create-user: least privilege, key only in Secrets Manager, and convergence."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from lsstctl.adapters.aws import classify
from lsstctl.adapters.iam_users import IamUserProvisioner
from lsstctl.domain.policies import user_policy
from lsstctl.emulator.faults import FaultInjector
from lsstctl.errors import AwsError, AwsUnavailableError

POLICY = user_policy(
    owner="alice",
    region="us-east-1",
    api_arn="arn:aws:execute-api:us-east-1:123456789012:abc/*",
    archive_bucket="archive",
)


def ensure(provisioner: IamUserProvisioner, key_policy=None):
    return provisioner.ensure_user(
        name="lsst-alice",
        owner="alice",
        policy_name="p",
        policy=POLICY,
        secret_name="lsstctl/users/alice",
        tags={"lsstctl:owner": "alice", "lsstctl:project": "lsst"},
        key_policy=key_policy,
    )


def keys() -> list[str]:
    return [k["AccessKeyId"] for k in boto3.client("iam").list_access_keys(UserName="lsst-alice")["AccessKeyMetadata"]]


def stored_key() -> str:
    return json.loads(boto3.client("secretsmanager").get_secret_value(SecretId="lsstctl/users/alice")["SecretString"])[
        "AccessKeyId"
    ]


def test_creates_a_tagged_user_with_its_key_in_secrets_manager(aws):
    arn, secret_arn = ensure(IamUserProvisioner(path="/lsstctl/"))
    iam = boto3.client("iam")
    assert arn.endswith(":user/lsstctl/lsst-alice")
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName="lsst-alice")["Tags"]}
    assert tags["lsstctl:owner"] == "alice"
    assert iam.list_user_policies(UserName="lsst-alice")["PolicyNames"] == ["p"]
    assert iam.list_attached_user_policies(UserName="lsst-alice")["AttachedPolicies"] == []
    assert secret_arn.startswith("arn:aws:secretsmanager:") and keys() == [stored_key()]


def test_repeating_converges_on_one_user_and_one_key(aws):
    provisioner = IamUserProvisioner(path="/lsstctl/")
    first = ensure(provisioner)
    second = ensure(provisioner)
    assert first == second and len(keys()) == 1


def test_a_lost_secret_is_replaced_and_the_orphan_key_removed(aws):
    provisioner = IamUserProvisioner(path="/lsstctl/")
    ensure(provisioner)
    old = keys()
    boto3.client("secretsmanager").delete_secret(SecretId="lsstctl/users/alice", ForceDeleteWithoutRecovery=True)
    ensure(provisioner)
    assert len(keys()) == 1 and keys() != old and keys() == [stored_key()]


def test_a_key_that_cannot_be_stored_is_deleted(aws):
    class BrokenSecrets:
        def __init__(self) -> None:
            self.real = boto3.client("secretsmanager")
            self.exceptions = self.real.exceptions

        def __getattr__(self, name: str):
            return getattr(self.real, name)

        def put_secret_value(self, **kwargs):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutSecretValue")

    with pytest.raises(ClientError) as refused:
        ensure(IamUserProvisioner(path="/lsstctl/", secrets=BrokenSecrets()))
    # A permanent refusal: the API answers 502 aws_error with AWS's code, not a bare 500.
    mapped = classify(refused.value)
    assert isinstance(mapped, AwsError) and mapped.http_status == 502
    assert mapped.details == {"aws_code": "AccessDeniedException", "operation": "PutSecretValue"}
    assert keys() == []  # no key exists that nobody can retrieve


def test_a_throttled_secret_store_is_retryable_and_the_retry_converges(aws):
    # Given Secrets Manager throttling the one CreateSecret call, beyond the SDK's retries
    plan = lambda call: call.operation == "CreateSecret" and call.service == "secrets-manager"  # noqa: E731
    with FaultInjector(plan=plan, scope=lambda: True) as faults:
        with pytest.raises(ClientError) as throttled:
            ensure(IamUserProvisioner(path="/lsstctl/"))
    # Then the failure is transient (503 with Retry-After) and no unreachable key is left
    assert isinstance(classify(throttled.value), AwsUnavailableError) and len(faults.log) == 1
    assert keys() == []
    # And the client's retry converges on one user, one key, stored in one secret
    ensure(IamUserProvisioner(path="/lsstctl/"))
    assert len(keys()) == 1 and keys() == [stored_key()]


def test_the_policy_grants_nothing_broad():
    statements = POLICY["Statement"]
    actions = [a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert "*" not in actions and not any(a.endswith(":*") for a in actions)
    assert all(s["Resource"] != "*" for s in statements)
    shell = next(s for s in statements if s["Sid"] == "ShellOnOwnHeadNodes")
    assert shell["Condition"] == {"StringEquals": {"aws:ResourceTag/lsstctl:owner": "alice"}}
    read = next(s for s in statements if s["Sid"] == "ReadOwnResults")
    assert read["Resource"] == "arn:aws:s3:::archive/alice/*"


def test_the_key_is_readable_by_the_owners_principals_only_from_before_it_is_stored(aws):
    """The secret's policy is put before the key is (the secret starts empty); the key's id
    is the secret's tag, so the control plane never reads the key back."""
    from lsstctl.domain.policies import key_secret_policy

    calls: list[str] = []
    client = boto3.client("secretsmanager")
    client.meta.events.register("before-call.secrets-manager.*", lambda model, **_: calls.append(model.name))
    role = "arn:aws:iam::123456789012:role/Pipelines"

    def policy(user_arn: str) -> dict:
        return key_secret_policy(owner="alice", readers=[user_arn, role], session_roles=[])

    provisioner = IamUserProvisioner(path="/lsstctl/", secrets=client)
    arn, secret_arn = ensure(provisioner, key_policy=policy)
    assert calls.index("PutResourcePolicy") < calls.index("PutSecretValue")
    assert "GetSecretValue" not in calls
    document = json.loads(client.get_resource_policy(SecretId=secret_arn)["ResourcePolicy"])
    (deny,) = document["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "secretsmanager:GetSecretValue"
    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": sorted([arn, role])}}
    tags = {t["Key"]: t["Value"] for t in client.describe_secret(SecretId=secret_arn)["Tags"]}
    assert tags["lsstctl:access-key-id"] == stored_key() and keys() == [stored_key()]
    # Repeated: the same key, no read of it either.
    calls.clear()
    assert ensure(provisioner, key_policy=policy) == (arn, secret_arn)
    assert "GetSecretValue" not in calls and "PutSecretValue" not in calls and len(keys()) == 1
