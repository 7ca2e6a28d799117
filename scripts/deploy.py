"""Deploy, upgrade and destroy the control plane in the account and region of the environment.

    python scripts/deploy.py deploy  [--stage S] [--yes] [--budget USD] [--alert-email ADDR]
                                     [--admins ARN,...] [--subnet subnet-...] [--key-name K]
                                     [--nodejs-layer ARN]
    python scripts/deploy.py destroy [--stage S] [--yes] [--teardown-clusters] [--delete-data]

`make deploy` / `make destroy` run these with the variables of the same names (STAGE, YES,
BUDGET_USD, ALERT_EMAIL, ADMIN_PRINCIPALS, CLUSTER_SUBNET_ID, ...). Credentials, account and
region are boto3's (AWS_PROFILE, AWS_REGION, ...).

deploy: the artifacts of `make package` go to an artifacts bucket under content-addressed keys
(a new build updates exactly what changed; the same build twice changes nothing), the
ParallelCluster layer is published from AWS's copy (or from the one `make package` built),
a change set is created and shown, and executed once confirmed; then the API's URL and a
first signed curl command. Deploying over an older version is the same command: stateful
resources are retained (DeletionPolicy/UpdateReplacePolicy Retain) and a change set that
would replace or remove one is refused.

destroy: refuses while clusters are live unless --teardown-clusters (then tears them down
through the control plane's own teardown workflow and waits); deletes the stack, which keeps
the state table, the archive and its access logs (Retain); --delete-data removes those too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "build" / "package"
STATEMACHINES = ROOT / "statemachines"
PCLUSTER_VERSION = "3.16.1"
# AWS's documented copy of ParallelCluster's Lambda layer (a zip, not a published layer).
PCLUSTER_LAYER_KEY = f"parallelcluster/{PCLUSTER_VERSION}/layers/aws-parallelcluster/lambda-layer.zip"
# Resources whose replacement or removal would lose data: a change set doing either is refused.
STATEFUL_TYPES = {"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SecretsManager::Secret", "AWS::KMS::Key"}
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]


class DeployError(Exception):
    """A deploy or destroy that cannot go on; the message says what to do."""


def names(stage: str) -> tuple[str, str]:
    """(stack name, resource Prefix) of a stage: `lsstctl` for the default, `lsstctl-<stage>`."""
    prefix = f"lsstctl-{stage}" if stage else "lsstctl"
    return prefix, prefix


@dataclass
class Options:
    stage: str = ""
    yes: bool = False
    budget_usd: float | None = None
    alert_email: str = ""
    admins: str = ""
    subnet: str = ""
    key_name: str = ""
    nodejs_layer: str = ""
    package_dir: Path = PACKAGE
    teardown_clusters: bool = False
    delete_data: bool = False
    # How long and how often to wait (tests compress both).
    poll_seconds: float = 10
    timeout_seconds: float = 3600
    confirm: Callable[[str], bool] = field(default=lambda prompt: input(prompt).strip().lower() in {"y", "yes"})
    say: Callable[[str], None] = print


# --------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    """The artifacts bucket (private, encrypted, TLS only); outside the stack, which needs it first."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] not in {"404", "NoSuchBucket", "NotFound"}:
            raise DeployError(f"artifacts bucket {bucket} exists but cannot be used: {error}") from error
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            }
        ),
    )


def upload(s3: Any, bucket: str, key: str, data: bytes) -> str:
    """Put once: keys are content-addressed, so an existing key already holds these bytes."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    return key


def upload_artifacts(s3: Any, bucket: str, prefix: str, package_dir: Path) -> dict[str, str]:
    """Upload what `make package` built; the template parameters naming them."""
    needed = ["lsstctl-code.zip", "lsstctl-api.zip", "lsstctl-deps-layer.zip", "control-plane.json"]
    missing = [n for n in needed if not (package_dir / n).exists()]
    if missing:
        raise DeployError(f"{', '.join(missing)} missing in {package_dir}: run `make package` first")
    keys = {}
    for name in needed:
        data = (package_dir / name).read_bytes()
        keys[name] = upload(s3, bucket, f"{prefix}/{_sha(data)}/{name}", data)
    definitions = sorted(STATEMACHINES.glob("*.asl.json"))
    digest = _sha(b"".join(p.name.encode() + p.read_bytes() for p in definitions))
    for path in definitions:
        upload(s3, bucket, f"{prefix}/statemachines-{digest}/{path.name}", path.read_bytes())
    return {
        "CodeKey": keys["lsstctl-code.zip"],
        "ApiCodeKey": keys["lsstctl-api.zip"],
        "DependenciesLayerKey": keys["lsstctl-deps-layer.zip"],
        "DefinitionsPrefix": f"{prefix}/statemachines-{digest}/",
        "_template": keys["control-plane.json"],
    }


def publish_pcluster_layer(
    s3: Any, lam: Any, bucket: str, prefix: str, region: str, package_dir: Path, say: Callable[[str], None]
) -> str:
    """ParallelCluster's layer, published once per content: AWS's copy, else the local build."""
    key = f"{prefix}/aws-parallelcluster-{PCLUSTER_VERSION}/lambda-layer.zip"
    source = f"s3://{region}-aws-parallelcluster/{PCLUSTER_LAYER_KEY}"
    try:
        s3.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": f"{region}-aws-parallelcluster", "Key": PCLUSTER_LAYER_KEY}
        )
        origin = source
    except ClientError as error:
        local = package_dir / "aws-parallelcluster-layer.zip"
        if not local.exists():
            raise DeployError(
                f"cannot copy {source} ({error.response['Error']['Code']}) and {local} is missing: run `make package`"
            ) from error
        say(
            f"AWS's layer zip unavailable ({error.response['Error']['Code']}): using {local.name} built by make package"
        )
        data = local.read_bytes()
        key = upload(s3, bucket, f"{prefix}/{_sha(data)}/aws-parallelcluster-layer.zip", data)
        origin = f"local build {_sha(data)}"
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    layer_name = f"{prefix}-aws-parallelcluster-{PCLUSTER_VERSION.replace('.', '-')}"
    description = f"AWS ParallelCluster {PCLUSTER_VERSION} ({etag})"
    for page in lam.get_paginator("list_layer_versions").paginate(LayerName=layer_name):
        for version in page["LayerVersions"]:
            if version.get("Description") == description:
                return str(version["LayerVersionArn"])
    say(f"publishing ParallelCluster's layer from {origin}")
    published = lam.publish_layer_version(
        LayerName=layer_name,
        Description=description,
        Content={"S3Bucket": bucket, "S3Key": key},
        CompatibleRuntimes=["python3.12"],
        CompatibleArchitectures=["x86_64"],
    )
    return str(published["LayerVersionArn"])


# --------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------
def stack_status(cfn: Any, stack: str) -> str | None:
    try:
        return str(cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"])
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


def outputs(cfn: Any, stack: str) -> dict[str, str]:
    found = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}


def stack_parameters(
    opts: Options, prefix: str, bucket: str, keys: dict[str, str], layer: str, previous: set[str]
) -> list[dict[str, Any]]:
    """Given values, else the deployed stack's (an upgrade keeps what was chosen), else defaults."""
    given: dict[str, str] = {
        "Prefix": prefix,
        "CodeBucket": bucket,
        "ParallelClusterLayerArn": layer,
        **{k: v for k, v in keys.items() if not k.startswith("_")},
    }
    for name, value in (
        ("ClusterSubnetId", opts.subnet),
        ("ClusterKeyName", opts.key_name),
        ("AdminPrincipals", opts.admins),
        ("AlertEmail", opts.alert_email),
        ("NodeJsLayerArn", opts.nodejs_layer),
    ):
        if value:
            given[name] = value
    if opts.budget_usd is not None:
        given["AccountBudgetUsd"] = f"{opts.budget_usd:g}"
    if "ClusterSubnetId" not in given and "ClusterSubnetId" not in previous:
        raise DeployError("the first deploy needs the clusters' subnet: CLUSTER_SUBNET_ID=subnet-... (--subnet)")
    kept = [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(previous - set(given))]
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())] + kept


def risky_changes(changes: list[dict[str, Any]]) -> list[str]:
    """Changes that would replace or remove a stateful resource."""
    risky = []
    for change in changes:
        rc = change.get("ResourceChange", {})
        if rc.get("ResourceType") not in STATEFUL_TYPES:
            continue
        if rc.get("Action") == "Remove" or rc.get("Replacement") in {"True", "Conditional"}:
            risky.append(
                f"{rc.get('Action')} {rc.get('LogicalResourceId')} ({rc.get('ResourceType')}, "
                f"replacement: {rc.get('Replacement', '-')})"
            )
    return risky


def _wait(waiter: Any, opts: Options, **kwargs: Any) -> None:
    delay = max(1, int(opts.poll_seconds))
    waiter.wait(**kwargs, WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(opts.timeout_seconds / delay))})


def deploy(session: Any, opts: Options) -> dict[str, str]:
    """Create or update the stack through a change set; the stack's outputs."""
    stack, prefix = names(opts.stage)
    region = session.region_name
    account = session.client("sts").get_caller_identity()["Account"]
    s3, cfn, lam = session.client("s3"), session.client("cloudformation"), session.client("lambda")
    bucket = f"{prefix}-artifacts-{account}-{region}"
    status = stack_status(cfn, stack)
    if status and (status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS"):
        raise DeployError(f"stack {stack} is {status}: wait for it to settle, then deploy again")
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(f"stack {stack} failed its first create (ROLLBACK_COMPLETE): run `make destroy`, then deploy")
    ensure_bucket(s3, bucket, region)
    keys = upload_artifacts(s3, bucket, prefix, opts.package_dir)
    layer = publish_pcluster_layer(s3, lam, bucket, prefix, region, opts.package_dir, opts.say)
    creating = status in (None, "REVIEW_IN_PROGRESS")
    previous = (
        set()
        if creating
        else {p["ParameterKey"] for p in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Parameters", [])}
    )
    template = json.loads((opts.package_dir / "control-plane.json").read_text())
    previous &= set(template["Parameters"])
    name = f"deploy-{int(time.time())}"
    cfn.create_change_set(
        StackName=stack,
        ChangeSetName=name,
        ChangeSetType="CREATE" if creating else "UPDATE",
        TemplateURL=f"https://{bucket}.s3.{region}.amazonaws.com/{keys['_template']}",
        Parameters=stack_parameters(opts, prefix, bucket, keys, layer, previous),
        Capabilities=CAPABILITIES,
        Tags=[{"Key": "lsstctl:stack", "Value": stack}],
    )
    try:
        _wait(cfn.get_waiter("change_set_create_complete"), opts, StackName=stack, ChangeSetName=name)
    except WaiterError as error:
        described = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        reason = described.get("StatusReason", "")
        if "didn't contain changes" in reason or "No updates" in reason:
            cfn.delete_change_set(StackName=stack, ChangeSetName=name)
            opts.say(f"{stack}: already up to date")
            return outputs(cfn, stack)
        raise DeployError(f"change set {name} failed: {reason or error}") from error
    changes = cfn.describe_change_set(StackName=stack, ChangeSetName=name).get("Changes", [])
    opts.say(f"{'Creating' if creating else 'Updating'} stack {stack} in {account}/{region}: {len(changes)} changes")
    for change in changes:
        rc = change["ResourceChange"]
        opts.say(
            f"  {rc['Action']:<8} {rc['LogicalResourceId']:<34} {rc['ResourceType']:<36} "
            f"replacement: {rc.get('Replacement', '-')}"
        )
    risky = risky_changes(changes)
    if risky:
        cfn.delete_change_set(StackName=stack, ChangeSetName=name)
        raise DeployError("refused: this change set would replace or remove data:\n  " + "\n  ".join(risky))
    if not opts.yes and not opts.confirm(f"Execute change set {name}? [y/N] "):
        cfn.delete_change_set(StackName=stack, ChangeSetName=name)
        raise DeployError("not executed (change set deleted)")
    cfn.execute_change_set(StackName=stack, ChangeSetName=name)
    waiter = "stack_create_complete" if creating else "stack_update_complete"
    try:
        _wait(cfn.get_waiter(waiter), opts, StackName=stack)
    except WaiterError as error:
        raise DeployError(
            f"stack {stack} did not complete ({stack_status(cfn, stack)}): see its events "
            f"(aws cloudformation describe-stack-events --stack-name {stack})"
        ) from error
    result = outputs(cfn, stack)
    url = result.get("ApiUrl", "")
    opts.say(
        f"\nAPI: {url}\nA first call, signed with your credentials (curl >= 7.75):\n"
        f'  curl --aws-sigv4 "aws:amz:{region}:execute-api" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" '
        f'-H "x-amz-security-token: $AWS_SESSION_TOKEN" {url}presets'
    )
    return result


# --------------------------------------------------------------------------------------
# Destroy
# --------------------------------------------------------------------------------------
def control_plane(session: Any, out: dict[str, str]) -> Any:
    """The control plane's services as the deployed stack configures them."""
    from lsstctl import wiring
    from lsstctl.settings import Settings

    settings = Settings(
        region=session.region_name,
        state_table=out["StateTableName"],
        idempotency_table=out["IdempotencyTableName"],
        archive_bucket=out["ArchiveBucketName"],
        event_bus=out["EventBusName"],
        launch_state_machine_arn=out["LaunchStateMachineArn"],
        teardown_state_machine_arn=out["TeardownStateMachineArn"],
        job_state_machine_arn=out["JobStateMachineArn"],
        engine="parallelcluster",
        engine_function_name=out.get("EngineFunctionName", ""),
        account_id=out.get("AccountId", ""),
    )
    return wiring.build(settings)


def destroy(session: Any, opts: Options) -> None:
    stack, prefix = names(opts.stage)
    cfn = session.client("cloudformation")
    if stack_status(cfn, stack) is None:
        opts.say(f"{stack}: no such stack")
        return
    out = outputs(cfn, stack)
    deps = control_plane(session, out) if "StateTableName" in out else None
    live = deps.store.list_billing_clusters() if deps else []
    if live and not opts.teardown_clusters:
        raise DeployError(
            f"refused: {len(live)} clusters may still bill ({', '.join(c.id for c in live[:10])}); "
            "tear them down first (DELETE /clusters/<name>) or pass --teardown-clusters"
        )
    if not opts.yes and not opts.confirm(f"Delete stack {stack}{' and its data' if opts.delete_data else ''}? [y/N] "):
        raise DeployError("not deleted")
    if live:
        from lsstctl.services import clusters

        for cluster in live:
            clusters.request_teardown(deps, cluster.id, reason="destroy")
        opts.say(f"tearing down {len(live)} clusters (results are archived first)")
        deadline = time.monotonic() + opts.timeout_seconds
        while (left := deps.store.list_billing_clusters()) and time.monotonic() < deadline:
            time.sleep(opts.poll_seconds)
        if left:
            raise DeployError(
                f"{len(left)} clusters still tearing down after {opts.timeout_seconds:.0f} s: run destroy again later"
            )
    cfn.delete_stack(StackName=stack)
    try:
        _wait(cfn.get_waiter("stack_delete_complete"), opts, StackName=stack)
    except WaiterError as error:
        raise DeployError(f"stack {stack} did not delete ({stack_status(cfn, stack)}): see its events") from error
    opts.say(f"{stack} deleted")
    kept = [out.get("StateTableName", ""), out.get("ArchiveBucketName", ""), out.get("AccessLogsBucketName", "")]
    if opts.delete_data:
        delete_data(session, prefix, out)
        opts.say("its data deleted too: " + ", ".join(k for k in kept if k))
    else:
        opts.say("kept (delete with --delete-data): " + ", ".join(k for k in kept if k))


def delete_data(session: Any, prefix: str, out: dict[str, str]) -> None:
    """What the stack retains, and the artifacts bucket: tables, then every version in the buckets."""
    ddb, s3 = session.client("dynamodb"), session.resource("s3")
    for table in (out.get("StateTableName"), out.get("IdempotencyTableName")):
        if table:
            try:
                ddb.delete_table(TableName=table)
            except ClientError as error:
                if error.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
    account = session.client("sts").get_caller_identity()["Account"]
    for name in (
        out.get("ArchiveBucketName"),
        out.get("AccessLogsBucketName"),
        f"{prefix}-artifacts-{account}-{session.region_name}",
    ):
        if not name:
            continue
        bucket = s3.Bucket(name)
        try:
            bucket.object_versions.delete()
            bucket.delete()
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchBucket":
                raise


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("deploy", "destroy"):
        p = sub.add_parser(command)
        p.add_argument(
            "--stage", default="", help="a second deployment beside the default one (names lsstctl-<stage>-*)"
        )
        p.add_argument("--yes", action="store_true", help="do not ask before executing")
    d = sub.choices["deploy"]
    d.add_argument("--budget", type=float, dest="budget_usd", help="the account's monthly AWS Budgets limit, USD")
    d.add_argument("--alert-email", default="", help="where budget alerts and owner notifications go")
    d.add_argument("--admins", default="", help="full ARNs that act on every user's clusters, comma separated")
    d.add_argument("--subnet", default="", help="the clusters' subnet (needed on the first deploy)")
    d.add_argument("--key-name", default="", help="an EC2 key pair for head-node SSH (default: SSM only)")
    d.add_argument("--nodejs-layer", default="", help="a layer with /opt/bin/node (ParallelCluster's create needs it)")
    d.add_argument("--package-dir", type=Path, default=PACKAGE)
    x = sub.choices["destroy"]
    x.add_argument("--teardown-clusters", action="store_true", help="tear live clusters down first (results archived)")
    x.add_argument("--delete-data", action="store_true", help="also delete the state tables and the archive")
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    opts = Options(**{k: v for k, v in args.items() if v not in (None, "") or k == "stage"})
    session = boto3.session.Session()
    if not session.region_name:
        print("no region: set AWS_REGION (or a profile with one)", file=sys.stderr)
        return 2
    try:
        if command == "deploy":
            deploy(session, opts)
        else:
            destroy(session, opts)
    except DeployError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
