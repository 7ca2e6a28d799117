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


def ensure(provisioner: IamUserProvisioner):
    return provisioner.ensure_user(
        name="lsst-alice",
        owner="alice",
        policy_name="p",
        policy=POLICY,
        secret_name="lsstctl/users/alice",
        tags={"lsstctl:owner": "alice", "lsstctl:project": "lsst"},
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

        def get_secret_value(self, **kwargs):
            return self.real.get_secret_value(**kwargs)

        def create_secret(self, **kwargs):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "CreateSecret")

    with pytest.raises(ClientError) as refused:
        ensure(IamUserProvisioner(path="/lsstctl/", secrets=BrokenSecrets()))
    # A permanent refusal: the API answers 502 aws_error with AWS's code, not a bare 500.
    mapped = classify(refused.value)
    assert isinstance(mapped, AwsError) and mapped.http_status == 502
    assert mapped.details == {"aws_code": "AccessDeniedException", "operation": "CreateSecret"}
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
