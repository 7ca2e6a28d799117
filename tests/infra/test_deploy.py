"""What we test is what we ship: the packaged template (`make package`), deployed by
scripts/deploy.py into the emulator's CloudFormation (moto), every resource accounted for;
an upgrade over it keeps the state; destroy refuses while clusters may bill.

The artifacts are the real code, API and template; the two layers are stand-ins (nothing is
invoked here, and building them needs the package index).
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import deploy  # noqa: E402  (scripts/deploy.py)
import package  # noqa: E402  (scripts/package.py)

# Template resources moto's CloudFormation skips (it reports them created, with no physical
# resource), each with why that is acceptable locally. A resource type missing here and in
# moto fails the deploy test: nothing added to the template is forgotten by the emulator.
UNSUPPORTED_LOCALLY = {
    "AWS::S3::BucketPolicy": "TLS-only and log-delivery grants; moto's bucket policies are judged by the emulator's "
    "glue (install_bucket_policy_scope), and tests/infra checks their statements",
    "AWS::SQS::QueuePolicy": "EventBridge's right to deliver to the audit queue; the emulator delivers in-process",
    "AWS::SNS::TopicPolicy": "AWS Budgets' right to publish; the emulator invokes the budget trigger with a real-shaped event",
    "AWS::SNS::Subscription": "the budget trigger's and the operator's subscriptions; the emulator's bootstrap subscribes",
    "AWS::Lambda::EventInvokeConfig": "async retry settings; the emulator invokes triggers in-process, once",
    "AWS::Budgets::Budget": "AWS Budgets never fires in moto; tests invoke the trigger with its notification",
    "AWS::ApiGateway::Stage": "throttling, access logs and tracing of the stage; locally the API is `chalice local`",
    "AWS::ApiGateway::Account": "the account's CloudWatch role for API Gateway logs; no logs are written locally",
    "AWS::SecretsManager::Secret": "the Slack signing secret; the emulator's bootstrap creates it with a fresh value",
    "AWS::CloudWatch::Alarm": "the operator's alarms on the guard's own metrics; tests/infra checks they watch the "
    "metrics the guard emits",
}


def stand_in_layer() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("python/README.txt", "stand-in layer: this test invokes no function")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package")
    package.deterministic_zip(out / "lsstctl-code.zip", package.code_files())
    package.build_api(out)
    for name in ("lsstctl-deps-layer.zip", "aws-parallelcluster-layer.zip"):
        (out / name).write_bytes(stand_in_layer())
    return out


@pytest.fixture
def account(aws: None) -> Iterator[Any]:
    from lsstctl.emulator.glue import install_bucket_policy_scope, install_cloudformation_gaps

    install_bucket_policy_scope()
    install_cloudformation_gaps()
    yield boto3.session.Session(region_name="us-east-1")


def options(packaged: Path, said: list[str] | None = None, **overrides: Any) -> deploy.Options:
    """Unattended (yes), quick polls, what it prints kept in `said`."""
    fields: dict[str, Any] = dict(
        yes=True,
        package_dir=packaged,
        poll_seconds=1,
        timeout_seconds=30,
        say=(said if said is not None else []).append,
    )
    return deploy.Options(**{**fields, **overrides})


def subnet(session: Any) -> str:
    return str(session.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"])


def template_of(packaged: Path) -> dict[str, Any]:
    return json.loads((packaged / "control-plane.json").read_text())


def test_the_packaged_template_deploys_and_every_resource_is_accounted_for(packaged: Path, account: Any) -> None:
    out = deploy.deploy(account, options(packaged, subnet=subnet(account)))
    cfn = account.client("cloudformation")
    assert cfn.describe_stacks(StackName="lsstctl")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    template = template_of(packaged)
    created = {
        r["LogicalResourceId"]: r
        for r in cfn.describe_stack_resources(StackName="lsstctl")["StackResources"]
        if r.get("LogicalResourceId")
    }
    skipped = {name: r["Type"] for name, r in template["Resources"].items() if name not in created}
    assert {t for t in skipped.values() if t not in UNSUPPORTED_LOCALLY} == set(), "neither created nor explained"
    assert set(UNSUPPORTED_LOCALLY) <= set(skipped.values()), "explained but no longer skipped: drop the entry"
    for name, resource in created.items():
        assert resource["ResourceType"] == template["Resources"][name]["Type"]

    # What moto made is what the code expects: names, handlers, definitions, the API's routes.
    assert out["StateTableName"] == "lsstctl-state" and out["ApiUrl"].endswith("/api/")
    lam = account.client("lambda")
    functions = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    assert functions["lsstctl-api"]["Handler"] == "app.app"
    assert {"lsstctl-engine", "lsstctl-launch-steps", "lsstctl-guard", "lsstctl-reconciler"} <= set(functions)
    sfn = account.client("stepfunctions")
    for machine in sfn.list_state_machines()["stateMachines"]:
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"])
        assert definition["States"] and "${" not in json.dumps(definition), machine["name"]

    apigw = account.client("apigateway")
    api_id = out["ApiUrl"].split("//")[1].split(".")[0]
    routes = {}
    for resource in apigw.get_resources(restApiId=api_id)["items"]:
        for verb in resource.get("resourceMethods", {}):
            method = apigw.get_method(restApiId=api_id, resourceId=resource["id"], httpMethod=verb)
            routes[(resource["path"], verb)] = method
    import app as chalice_module  # chalice_app/app.py (tests/conftest.py puts chalice_app on the path)

    registered = {(path, verb) for path, methods in chalice_module.app.routes.items() for verb in methods}
    assert set(routes) == registered
    for route, method in routes.items():
        # Slack cannot sign for AWS: its endpoint checks Slack's own signature (services/chatops.py).
        assert method["authorizationType"] == ("NONE" if route == ("/chatops/slack", "POST") else "AWS_IAM"), route
        integration = method["methodIntegration"]
        assert integration["type"] == "AWS_PROXY" and ":function:lsstctl-api/" in integration["uri"], route


def test_an_upgrade_keeps_every_table_secret_and_result(packaged: Path, account: Any, tmp_path: Path) -> None:
    first = deploy.deploy(
        account, options(packaged, subnet=subnet(account), admins="arn:aws:iam::123456789012:user/ops")
    )
    ddb, s3, secrets = account.client("dynamodb"), account.client("s3"), account.client("secretsmanager")
    ddb.put_item(
        TableName=first["StateTableName"], Item={"pk": {"S": "cluster#demo"}, "sk": {"S": "cluster"}, "v": {"S": "1"}}
    )
    s3.put_object(Bucket=first["ArchiveBucketName"], Key="alice/demo/result.fits", Body=b"science")
    secrets.create_secret(Name="lsstctl/users/alice", SecretString='{"AccessKeyId": "AKIA..."}')
    old_code = account.client("lambda").get_function(FunctionName="lsstctl-api")["Code"]["Location"]

    # The next version: other code (a new content-addressed key), same template otherwise.
    upgraded = tmp_path / "next"
    upgraded.mkdir()
    for path in packaged.iterdir():
        (upgraded / path.name).write_bytes(path.read_bytes())
    with zipfile.ZipFile(upgraded / "lsstctl-api.zip", "a") as archive:
        archive.writestr("VERSION", "next")
    said: list[str] = []
    second = deploy.deploy(account, options(upgraded, said))  # no subnet, no admins: kept from the first

    stack = account.client("cloudformation").describe_stacks(StackName="lsstctl")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert any(line.startswith("Updating stack lsstctl") for line in said)
    assert second["StateTableName"] == first["StateTableName"] and second["ClusterSubnetId"] == first["ClusterSubnetId"]
    assert second["AdminPrincipals"] == "arn:aws:iam::123456789012:user/ops"
    assert ddb.get_item(TableName=second["StateTableName"], Key={"pk": {"S": "cluster#demo"}, "sk": {"S": "cluster"}})[
        "Item"
    ]["v"] == {"S": "1"}
    assert s3.get_object(Bucket=second["ArchiveBucketName"], Key="alice/demo/result.fits")["Body"].read() == b"science"
    assert secrets.get_secret_value(SecretId="lsstctl/users/alice")["SecretString"].startswith("{")
    assert account.client("lambda").get_function(FunctionName="lsstctl-api")["Code"]["Location"] != old_code


def test_stateful_resources_survive_deletes_and_replacements(packaged: Path) -> None:
    for name, resource in template_of(packaged)["Resources"].items():
        if resource["Type"] in deploy.STATEFUL_TYPES:
            assert resource.get("UpdateReplacePolicy") == "Retain", name
            if name != "IdempotencyTable":  # records that expire within hours; destroy drops it
                assert resource.get("DeletionPolicy") == "Retain", name


def test_a_change_set_that_would_lose_data_is_refused() -> None:
    change = {
        "ResourceChange": {
            "Action": "Modify",
            "LogicalResourceId": "StateTable",
            "ResourceType": "AWS::DynamoDB::Table",
            "Replacement": "True",
        }
    }
    harmless = {
        "ResourceChange": {
            "Action": "Modify",
            "LogicalResourceId": "ApiFunction",
            "ResourceType": "AWS::Lambda::Function",
            "Replacement": "False",
        }
    }
    removal = {
        "ResourceChange": {"Action": "Remove", "LogicalResourceId": "ArchiveBucket", "ResourceType": "AWS::S3::Bucket"}
    }
    assert deploy.risky_changes([harmless]) == []
    assert [r.split()[1] for r in deploy.risky_changes([change, harmless, removal])] == ["StateTable", "ArchiveBucket"]


def test_the_first_deploy_needs_a_subnet_and_the_package(packaged: Path, account: Any, tmp_path: Path) -> None:
    with pytest.raises(deploy.DeployError, match="CLUSTER_SUBNET_ID"):
        deploy.deploy(account, options(packaged))
    with pytest.raises(deploy.DeployError, match="make package"):
        deploy.deploy(account, options(tmp_path, subnet=subnet(account)))
    assert account.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_destroy_refuses_while_clusters_may_bill_then_keeps_the_data(packaged: Path, account: Any) -> None:
    from lsstctl.domain.models import Cluster, ClusterSpec

    out = deploy.deploy(account, options(packaged, subnet=subnet(account)))
    deps = deploy.control_plane(account, out)
    now = "2026-12-05T00:00:00Z"
    spec = ClusterSpec.model_validate(
        {"name": "demo", "queues": [{"name": "q", "instance_types": ["c5.large"]}], "budget_usd": 10}
    )
    deps.store.create_cluster(Cluster(name="demo", owner="alice", spec=spec, created_at=now, updated_at=now))
    assert [c.name for c in deps.store.list_billing_clusters()] == ["demo"]

    with pytest.raises(deploy.DeployError, match="1 clusters may still bill"):
        deploy.destroy(account, options(packaged))
    assert (
        account.client("cloudformation").describe_stacks(StackName="lsstctl")["Stacks"][0]["StackStatus"]
        == "CREATE_COMPLETE"
    )

    from lsstctl.domain.models import ClusterState

    deps.store.update_cluster(deps.store.list_billing_clusters()[0].id, {"state": ClusterState.DELETED})
    asked: list[str] = []
    with pytest.raises(deploy.DeployError, match="not deleted"):
        deploy.destroy(account, options(packaged, yes=False, confirm=lambda prompt: bool(asked.append(prompt))))
    assert asked == ["Delete stack lsstctl? [y/N] "]
    said: list[str] = []
    deploy.destroy(account, options(packaged, said))
    assert said[-1].startswith("kept (delete with --delete-data): lsstctl-state, ")
    assert deploy.stack_status(account.client("cloudformation"), "lsstctl") is None
    # Retained: the records and the results.
    assert account.client("dynamodb").describe_table(TableName="lsstctl-state")["Table"]["TableName"] == "lsstctl-state"
    account.client("s3").head_bucket(Bucket=out["ArchiveBucketName"])


def test_the_api_package_is_the_chalice_app_without_the_emulator_and_reproducible(
    packaged: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(packaged / "lsstctl-api.zip") as archive:
        names = archive.namelist()
    assert {"app.py", "chalicelib/routes.py", "chalice/app.py", "lsstctl/services/clusters.py"} <= set(names)
    assert not [n for n in names if "emulator" in n or n.endswith(".pyc")]
    again = tmp_path / "again"
    again.mkdir()
    package.build_api(again)
    for name in ("lsstctl-api.zip", "control-plane.json"):
        assert (again / name).read_bytes() == (packaged / name).read_bytes(), name


def test_the_packaged_template_passes_cfn_lint_and_checkov(packaged: Path) -> None:
    from cfnlint.api import lint_file

    from tests.infra.test_security_scan import checkov, findings
    from tests.infra.test_templates import lint_problems

    assert lint_problems(lint_file(packaged / "control-plane.json")) == []
    report = checkov(packaged / "control-plane.json")
    assert report["summary"]["parsing_errors"] == 0 and findings(report) == []
    stage = template_of(packaged)["Resources"]["ApiStage"]["Properties"]
    assert stage["MethodSettings"][0]["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert stage["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert stage["DeploymentId"]["Ref"].startswith("ApiDeployment") and stage["DeploymentId"]["Ref"] != "ApiDeployment"


# What creating, updating and deleting each resource type of the template asks of the
# deployer (CloudFormation acts with the deployer's credentials), with a resource as the
# default stack names it, and what scripts/deploy.py itself calls.
_A = "123456789012:"
DEPLOYER_NEEDS: dict[str, list[tuple[str, str]]] = {
    "AWS::DynamoDB::Table": [
        ("dynamodb:CreateTable", f"arn:aws:dynamodb:us-east-1:{_A}table/lsstctl-state"),
        ("dynamodb:UpdateContinuousBackups", f"arn:aws:dynamodb:us-east-1:{_A}table/lsstctl-state"),
        ("dynamodb:UpdateTimeToLive", f"arn:aws:dynamodb:us-east-1:{_A}table/lsstctl-idempotency"),
    ],
    "AWS::S3::Bucket": [
        ("s3:CreateBucket", "arn:aws:s3:::lsstctl-archive-123456789012-us-east-1"),
        ("s3:PutBucketLogging", "arn:aws:s3:::lsstctl-archive-123456789012-us-east-1"),
        ("s3:PutLifecycleConfiguration", "arn:aws:s3:::lsstctl-access-logs-123456789012-us-east-1"),
    ],
    "AWS::S3::BucketPolicy": [("s3:PutBucketPolicy", "arn:aws:s3:::lsstctl-archive-123456789012-us-east-1")],
    "AWS::Events::EventBus": [("events:CreateEventBus", f"arn:aws:events:us-east-1:{_A}event-bus/lsstctl-events")],
    "AWS::Events::Rule": [
        ("events:PutRule", f"arn:aws:events:us-east-1:{_A}rule/lsstctl-events/lsstctl-all-events"),
        ("events:PutTargets", f"arn:aws:events:us-east-1:{_A}rule/lsstctl-guard"),
    ],
    "AWS::SQS::Queue": [("sqs:CreateQueue", f"arn:aws:sqs:us-east-1:{_A}lsstctl-events-audit")],
    "AWS::SQS::QueuePolicy": [("sqs:SetQueueAttributes", f"arn:aws:sqs:us-east-1:{_A}lsstctl-events-audit")],
    "AWS::SNS::Topic": [("sns:CreateTopic", f"arn:aws:sns:us-east-1:{_A}lsstctl-notifications")],
    "AWS::SNS::TopicPolicy": [("sns:SetTopicAttributes", f"arn:aws:sns:us-east-1:{_A}lsstctl-budget-alerts")],
    "AWS::SNS::Subscription": [("sns:Subscribe", f"arn:aws:sns:us-east-1:{_A}lsstctl-budget-alerts")],
    "AWS::CloudWatch::Alarm": [
        ("cloudwatch:PutMetricAlarm", f"arn:aws:cloudwatch:us-east-1:{_A}alarm:lsstctl-guard-pass-overran"),
        ("cloudwatch:DeleteAlarms", f"arn:aws:cloudwatch:us-east-1:{_A}alarm:lsstctl-guard-silent"),
    ],
    "AWS::IAM::ManagedPolicy": [("iam:CreatePolicy", f"arn:aws:iam::{_A}policy/lsstctl-StepsCorePolicy-ABC")],
    "AWS::IAM::Role": [
        ("iam:CreateRole", f"arn:aws:iam::{_A}role/lsstctl-ApiRole-ABC"),
        ("iam:PutRolePolicy", f"arn:aws:iam::{_A}role/lsstctl-ApiRole-ABC"),
        ("iam:AttachRolePolicy", f"arn:aws:iam::{_A}role/lsstctl-ApiGatewayCloudWatchRole-ABC"),
        ("iam:PassRole", f"arn:aws:iam::{_A}role/lsstctl-ApiRole-ABC"),
    ],
    "AWS::Lambda::LayerVersion": [
        ("lambda:PublishLayerVersion", f"arn:aws:lambda:us-east-1:{_A}layer:lsstctl-DependenciesLayer")
    ],
    "AWS::Lambda::Function": [
        ("lambda:CreateFunction", f"arn:aws:lambda:us-east-1:{_A}function:lsstctl-api"),
        ("lambda:UpdateFunctionCode", f"arn:aws:lambda:us-east-1:{_A}function:lsstctl-guard"),
        ("lambda:GetLayerVersion", f"arn:aws:lambda:us-east-1:{_A}layer:lsstctl-aws-parallelcluster-3-16-1:1"),
    ],
    "AWS::Lambda::Permission": [("lambda:AddPermission", f"arn:aws:lambda:us-east-1:{_A}function:lsstctl-api")],
    "AWS::Lambda::EventInvokeConfig": [
        ("lambda:PutFunctionEventInvokeConfig", f"arn:aws:lambda:us-east-1:{_A}function:lsstctl-guard")
    ],
    "AWS::Logs::LogGroup": [
        ("logs:CreateLogGroup", f"arn:aws:logs:us-east-1:{_A}log-group:/aws/lambda/lsstctl-api"),
        ("logs:PutRetentionPolicy", f"arn:aws:logs:us-east-1:{_A}log-group:/aws/vendedlogs/states/lsstctl-launch"),
        ("logs:CreateLogGroup", f"arn:aws:logs:us-east-1:{_A}log-group:/aws/apigateway/lsstctl-api"),
        ("logs:CreateLogGroup", f"arn:aws:logs:us-east-1:{_A}log-group:lsstctl-audit"),
        ("logs:PutRetentionPolicy", f"arn:aws:logs:us-east-1:{_A}log-group:lsstctl-audit"),
    ],
    "AWS::StepFunctions::StateMachine": [
        ("states:CreateStateMachine", f"arn:aws:states:us-east-1:{_A}stateMachine:lsstctl-launch"),
        ("logs:CreateLogDelivery", "*"),
    ],
    "AWS::ApiGateway::RestApi": [
        ("apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis"),
        ("apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1b2c3"),
    ],
    "AWS::ApiGateway::Deployment": [("apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/a1b2c3/deployments")],
    "AWS::ApiGateway::Stage": [("apigateway:PATCH", "arn:aws:apigateway:us-east-1::/restapis/a1b2c3/stages/api")],
    "AWS::ApiGateway::Account": [("apigateway:PATCH", "arn:aws:apigateway:us-east-1::/account")],
    "AWS::Budgets::Budget": [("budgets:ModifyBudget", f"arn:aws:budgets::{_A}budget/lsstctl-account")],
    "AWS::SSM::Document": [
        ("ssm:CreateDocument", f"arn:aws:ssm:us-east-1:{_A}document/lsstctl-queue-probe"),
        ("ssm:UpdateDocument", f"arn:aws:ssm:us-east-1:{_A}document/lsstctl-queue-probe"),
        ("ssm:DeleteDocument", f"arn:aws:ssm:us-east-1:{_A}document/lsstctl-queue-probe"),
    ],
    "AWS::SecretsManager::Secret": [
        (
            "secretsmanager:CreateSecret",
            f"arn:aws:secretsmanager:us-east-1:{_A}secret:lsstctl/chatops/slack-signing-secret-AbCdEf",
        ),
        ("secretsmanager:GetRandomPassword", "*"),
    ],
}
DEPLOY_SCRIPT_NEEDS = [
    ("cloudformation:CreateChangeSet", f"arn:aws:cloudformation:us-east-1:{_A}stack/lsstctl/0a1b"),
    ("cloudformation:ExecuteChangeSet", f"arn:aws:cloudformation:us-east-1:{_A}stack/lsstctl-dev/0a1b"),
    ("cloudformation:DeleteStack", f"arn:aws:cloudformation:us-east-1:{_A}stack/lsstctl/0a1b"),
    ("s3:CreateBucket", "arn:aws:s3:::lsstctl-artifacts-123456789012-us-east-1"),
    ("s3:PutBucketPublicAccessBlock", "arn:aws:s3:::lsstctl-artifacts-123456789012-us-east-1"),
    ("s3:PutObject", "arn:aws:s3:::lsstctl-artifacts-123456789012-us-east-1/lsstctl/0a1b/lsstctl-code.zip"),
    ("s3:GetObject", "arn:aws:s3:::us-east-1-aws-parallelcluster/" + deploy.PCLUSTER_LAYER_KEY),
    ("lambda:ListLayerVersions", "*"),
    ("lambda:PublishLayerVersion", f"arn:aws:lambda:us-east-1:{_A}layer:lsstctl-aws-parallelcluster-3-16-1"),
    ("dynamodb:Query", f"arn:aws:dynamodb:us-east-1:{_A}table/lsstctl-state/index/by_billing"),
    ("states:StartExecution", f"arn:aws:states:us-east-1:{_A}stateMachine:lsstctl-teardown"),
    ("dynamodb:DeleteTable", f"arn:aws:dynamodb:us-east-1:{_A}table/lsstctl-state"),
    ("s3:DeleteObjectVersion", "arn:aws:s3:::lsstctl-archive-123456789012-us-east-1/alice/x"),
]
DEPLOYER_MUST_NOT = [
    # the audit trail outlives the stack: deploying never deletes it
    ("logs:DeleteLogGroup", f"arn:aws:logs:us-east-1:{_A}log-group:lsstctl-audit"),
    ("iam:CreateUser", f"arn:aws:iam::{_A}user/anyone"),
    ("iam:CreateRole", f"arn:aws:iam::{_A}role/Admin"),
    ("iam:PutRolePolicy", f"arn:aws:iam::{_A}role/OrganizationAccountAccessRole"),
    ("s3:GetObject", "arn:aws:s3:::payroll/2026.csv"),
    ("dynamodb:DeleteTable", f"arn:aws:dynamodb:us-east-1:{_A}table/orders"),
    ("lambda:UpdateFunctionCode", f"arn:aws:lambda:us-east-1:{_A}function:billing"),
    ("ssm:UpdateDocument", f"arn:aws:ssm:us-east-1:{_A}document/patch-baseline"),
]


def test_the_documented_deployer_policy_covers_the_deploy_and_nothing_else(packaged: Path) -> None:
    from tests.infra.test_templates import allows

    policy = json.loads((ROOT / "infra" / "deployer-policy.json").read_text())
    statements = policy["Statement"]
    assert set(DEPLOYER_NEEDS) == {r["Type"] for r in template_of(packaged)["Resources"].values()}
    denied = [(a, r) for needs in DEPLOYER_NEEDS.values() for a, r in needs if not allows({}, statements, a, r)]
    denied += [(a, r) for a, r in DEPLOY_SCRIPT_NEEDS if not allows({}, statements, a, r)]
    assert denied == []
    assert [(a, r) for a, r in DEPLOYER_MUST_NOT if allows({}, statements, a, r)] == []
