"""Create the control plane's resources in the emulator: the same tables, bucket, bus,
functions and state machines (from statemachines/*.asl.json) that infra/ creates on AWS,
plus the network and ParallelCluster AMI a real account already has."""

from __future__ import annotations

import io
import json
import re
import secrets
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lsstctl.adapters.dynamodb_state import table_definition
from lsstctl.adapters.local_engine import PCLUSTER_VERSION
from lsstctl.domain.scripts import node_cap_document, queue_probe_document

ROOT = Path(__file__).resolve().parents[2]
STATEMACHINES = ROOT / "statemachines"
ACCOUNT = "123456789012"
AUDIT_QUEUE = "lsstctl-events-audit"
AUDIT_LOG_GROUP = "lsstctl-audit"  # the audit trail (the template's AuditLogGroup)

FUNCTIONS = {
    "LaunchStepsFunctionArn": ("lsstctl-launch-steps", "lambdas.launch_steps.lambda_handler"),
    "TeardownStepsFunctionArn": ("lsstctl-teardown-steps", "lambdas.teardown_steps.lambda_handler"),
    "JobStepsFunctionArn": ("lsstctl-job-steps", "lambdas.job_steps.lambda_handler"),
    "ChatOpsFunctionArn": ("lsstctl-chatops", "lambdas.chatops.lambda_handler"),
}
# The cluster engine's own function (on AWS, on ParallelCluster's layer; every other
# function calls it). The emulator creates it as the template does; its functions run the
# local engine in process unless LSSTCTL_ENGINE_FUNCTION_NAME names it.
ENGINE_FUNCTION = ("lsstctl-engine", "lambdas.engine.lambda_handler")
# Triggers: the guard (schedule), the idle alarm (EventBridge), AWS Budgets (SNS).
TRIGGER_FUNCTIONS = {
    "guard": ("lsstctl-guard", "lambdas.guard.lambda_handler"),
    "idle": ("lsstctl-idle-alarm", "lambdas.idle_alarm.lambda_handler"),
    "budget": ("lsstctl-budget-alarm", "lambdas.budget_alarm.lambda_handler"),
    "reconciler": ("lsstctl-reconciler", "lambdas.reconciler.lambda_handler"),
    "notify": ("lsstctl-notify", "lambdas.chatops.notify_handler"),
}
# Lifecycle events that become a message in the owner's Slack channel (services/chatops.py).
NOTIFY_PATTERN = {
    "source": ["lsstctl"],
    "detail-type": ["Cluster State Changed", "Job State Changed", "Spend Warning", "Teardown Completed"],
}
SLACK_SIGNING_SECRET = "lsstctl/chatops/slack-signing-secret"
QUEUE_PROBE_DOCUMENT = "lsstctl-queue-probe"
NODE_CAP_DOCUMENT = "lsstctl-node-cap"
IDLE_ALARM_PATTERN = {
    "source": ["aws.cloudwatch"],
    "detail-type": ["CloudWatch Alarm State Change"],
    "detail": {"alarmName": [{"prefix": "lsstctl-idle-"}], "state": {"value": ["ALARM"]}},
}
STATE_MACHINES = {
    "launch": "lsstctl-launch",
    "teardown": "lsstctl-teardown",
    "run_job": "lsstctl-run-job",
    "chatops": "lsstctl-chatops",
}

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9]+)\}")


class RetryingSession:
    """A boto3 session whose clients retry throttling and 5xx as the control plane's do
    (botocore standard mode), with more attempts: the emulator must come up on a bad day."""

    ATTEMPTS = 10

    def __init__(self, session: Any):
        self._session = session

    def client(self, service: str) -> Any:
        from botocore.config import Config

        return self._session.client(service, config=Config(retries={"mode": "standard", "max_attempts": self.ATTEMPTS}))

    def resource(self, service: str) -> Any:
        from botocore.config import Config

        return self._session.resource(
            service, config=Config(retries={"mode": "standard", "max_attempts": self.ATTEMPTS})
        )


def render_definition(path: Path, values: dict[str, str]) -> str:
    """Fill ${Placeholders}; a placeholder without a value is an error, never left in."""
    text = path.read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise KeyError(f"{path.name}: no value for {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _zip_stub() -> bytes:
    """moto wants a package; the emulator imports the real handler in-process instead."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "lsstctl emulator: handlers run in-process from the repository\n")
    return buffer.getvalue()


def ensure_pcluster_ami(region: str) -> str:
    """ParallelCluster looks its AMI up by name, owned by 'amazon' (moto has none)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami

    backend = ec2_backends[ACCOUNT][region]
    name = f"aws-parallelcluster-{PCLUSTER_VERSION}-amzn2023-hvm-x86_64-202601010000"
    for ami in backend.amis.values():
        if ami.name == name:
            return ami.id
    ami = Ami(
        backend,
        ami_id="ami-0a1b2c3d4e5f60718",
        name=name,
        owner_alias="amazon",
        architecture="x86_64",
        creation_date=datetime(2026, 1, 1, tzinfo=UTC),
    )
    backend.amis[ami.id] = ami
    return ami.id


def create_cluster_network(session: Any, region: str, *, key_name: str = "lsstctl-local") -> dict[str, str]:
    """What ParallelCluster needs in an account: a VPC with DNS, a subnet, a key, its AMI."""
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/20")["Subnet"]["SubnetId"]
    ec2.create_key_pair(KeyName=key_name, KeyType="rsa")
    return {
        "subnet": subnet,
        "key": key_name,
        "ami": ensure_pcluster_ami(region),
        "metrics_policy": create_head_node_metrics_policy(session),
    }


def create_head_node_metrics_policy(session: Any) -> str:
    """The deployment's head-node metrics policy (infra/control-plane.yaml has the same)."""
    from lsstctl.domain.policies import HEAD_NODE_METRICS_POLICY, head_node_metrics_policy

    iam = session.client("iam")
    try:
        return iam.create_policy(
            PolicyName=HEAD_NODE_METRICS_POLICY, PolicyDocument=json.dumps(head_node_metrics_policy())
        )["Policy"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        return f"arn:aws:iam::{ACCOUNT}:policy/{HEAD_NODE_METRICS_POLICY}"


def create_tables(session: Any, *, state: str = "lsstctl-state", idempotency: str = "lsstctl-idempotency") -> None:
    """The state table (TTL on `expires_at`) and Powertools' idempotency table (on `expiration`)."""
    ddb = session.client("dynamodb")
    ddb.create_table(**table_definition(state))
    ddb.update_time_to_live(TableName=state, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    ddb.create_table(
        TableName=idempotency,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(
        TableName=idempotency, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
    )


LOCAL_PEOPLE_ROLE = "lsstctl-local-people"
LOCAL_ADMIN = f"arn:aws:sts::{ACCOUNT}:assumed-role/{LOCAL_PEOPLE_ROLE}/admin"


def register_local_people(session: Any, state_table: str = "lsstctl-state") -> dict[str, str]:
    """The role whose sessions the local identity header names (`X-Lsst-Principal: alice`
    is `arn:aws:sts::<account>:assumed-role/lsstctl-local-people/alice`), registered as an
    admin registers IAM Identity Center's roles: session names trusted. Its `admin`
    session is the local admin. Returns the settings that say so."""
    from lsstctl.adapters.dynamodb_state import DynamoStateStore
    from lsstctl.domain.models import iso, utcnow
    from lsstctl.domain.principals import Registration, parse_arn

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    arn = session.client("iam").create_role(RoleName=LOCAL_PEOPLE_ROLE, AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
    DynamoStateStore(state_table, resource=session.resource("dynamodb")).put_registration(
        Registration(
            key=parse_arn(arn).key,
            arn=arn,
            kind="role",
            trust_session_name=True,
            registered_by="emulator bootstrap",
            registered_at=iso(utcnow()),
        )
    )
    return {
        "LSSTCTL_ACCOUNT_ID": ACCOUNT,
        "LSSTCTL_ADMIN_PRINCIPALS": LOCAL_ADMIN,
        "LSSTCTL_LOCAL_PEOPLE_ROLE": LOCAL_PEOPLE_ROLE,
    }


def bootstrap(session: Any, region: str) -> dict[str, str]:
    """Create everything; returns the LSSTCTL_* settings that point at it."""
    network = create_cluster_network(session, region)
    create_tables(session)
    people = register_local_people(session)
    session.client("s3").create_bucket(Bucket="lsstctl-archive")

    session.client("logs").create_log_group(logGroupName=AUDIT_LOG_GROUP)
    events = session.client("events")
    sqs = session.client("sqs")
    events.create_event_bus(Name="lsstctl-events")
    queue_url = sqs.create_queue(QueueName=AUDIT_QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="lsstctl-all-events", EventBusName="lsstctl-events", EventPattern=json.dumps({"source": ["lsstctl"]})
    )
    events.put_targets(
        Rule="lsstctl-all-events", EventBusName="lsstctl-events", Targets=[{"Id": "audit", "Arn": queue_arn}]
    )

    iam = session.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName="lsstctl-local", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

    lam = session.client("lambda")
    arns: dict[str, str] = {}
    for placeholder, (name, handler) in FUNCTIONS.items():
        arns[placeholder] = lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler=handler,
            Code={"ZipFile": _zip_stub()},
            Timeout=900,
            MemorySize=512,
        )["FunctionArn"]

    lam.create_function(
        FunctionName=ENGINE_FUNCTION[0],
        Runtime="python3.12",
        Role=role,
        Handler=ENGINE_FUNCTION[1],
        Code={"ZipFile": _zip_stub()},
        Timeout=900,
        MemorySize=2048,
    )
    triggers = {
        key: lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler=handler,
            Code={"ZipFile": _zip_stub()},
            Timeout=300,
            MemorySize=512,
        )["FunctionArn"]
        for key, (name, handler) in TRIGGER_FUNCTIONS.items()
    }
    events.put_rule(Name="lsstctl-idle-alarms", EventPattern=json.dumps(IDLE_ALARM_PATTERN))
    events.put_targets(Rule="lsstctl-idle-alarms", Targets=[{"Id": "idle", "Arn": triggers["idle"]}])
    # moto never fires schedules: the emulator's scheduler (or the simulation) ticks the guard.
    events.put_rule(Name="lsstctl-guard", ScheduleExpression="rate(1 minute)")
    events.put_targets(Rule="lsstctl-guard", Targets=[{"Id": "guard", "Arn": triggers["guard"]}])
    events.put_rule(Name="lsstctl-reconciler", ScheduleExpression="rate(5 minutes)")
    events.put_targets(Rule="lsstctl-reconciler", Targets=[{"Id": "reconciler", "Arn": triggers["reconciler"]}])
    events.put_rule(Name="lsstctl-notify", EventBusName="lsstctl-events", EventPattern=json.dumps(NOTIFY_PATTERN))
    events.put_targets(
        Rule="lsstctl-notify", EventBusName="lsstctl-events", Targets=[{"Id": "notify", "Arn": triggers["notify"]}]
    )
    # The Slack app's signing secret (on AWS the operator puts Slack's there); locally a
    # fresh one, which tests read to sign their requests as Slack would.
    signing = session.client("secretsmanager").create_secret(
        Name=SLACK_SIGNING_SECRET, SecretString=json.dumps({"signing_secret": secrets.token_hex(16)})
    )["ARN"]

    sns = session.client("sns")
    notifications = sns.create_topic(Name="lsstctl-notifications")["TopicArn"]
    inbox_url = sqs.create_queue(QueueName="lsstctl-notifications-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=notifications, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"})
    budget_alerts = sns.create_topic(Name="lsstctl-budget-alerts")["TopicArn"]
    sns.subscribe(TopicArn=budget_alerts, Protocol="lambda", Endpoint=triggers["budget"])
    # The operator's topic, as the template's (its CloudWatch alarms on the guard's own
    # metrics are the template's: moto evaluates no alarm).
    sns.create_topic(Name="lsstctl-operator-alarms")

    # The one command the guard and the idle alarm may run on head nodes (as the template's).
    probe = session.client("ssm").create_document(
        Name=QUEUE_PROBE_DOCUMENT,
        DocumentType="Command",
        DocumentFormat="JSON",
        Content=json.dumps(queue_probe_document()),
    )["DocumentDescription"]["Name"]
    # ... and the one the guard and the launch's last step run to cap a queue's nodes.
    node_cap = session.client("ssm").create_document(
        Name=NODE_CAP_DOCUMENT, DocumentType="Command", DocumentFormat="JSON", Content=json.dumps(node_cap_document())
    )["DocumentDescription"]["Name"]

    sfn = session.client("stepfunctions")
    machines = {
        key: sfn.create_state_machine(
            name=name, roleArn=role, definition=render_definition(STATEMACHINES / f"{key}.asl.json", arns)
        )["stateMachineArn"]
        for key, name in STATE_MACHINES.items()
    }
    return {
        "LSSTCTL_REGION": region,
        "LSSTCTL_CLUSTER_SUBNET_ID": network["subnet"],
        "LSSTCTL_CLUSTER_KEY_NAME": network["key"],
        "LSSTCTL_HEAD_NODE_METRICS_POLICY_ARN": network["metrics_policy"],
        "LSSTCTL_LAUNCH_STATE_MACHINE_ARN": machines["launch"],
        "LSSTCTL_TEARDOWN_STATE_MACHINE_ARN": machines["teardown"],
        "LSSTCTL_JOB_STATE_MACHINE_ARN": machines["run_job"],
        "LSSTCTL_CHATOPS_STATE_MACHINE_ARN": machines["chatops"],
        "LSSTCTL_SLACK_SIGNING_SECRET_ARN": signing,
        # Locally, replies and channel messages go to test servers on this machine.
        "LSSTCTL_CHAT_URL_PREFIX": "http://127.0.0.1:",
        "LSSTCTL_AUDIT_QUEUE_URL": queue_url,
        "LSSTCTL_AUDIT_LOG_GROUP": AUDIT_LOG_GROUP,
        "LSSTCTL_NOTIFICATIONS_TOPIC_ARN": notifications,
        "LSSTCTL_NOTIFICATIONS_INBOX_URL": inbox_url,
        "LSSTCTL_BUDGET_ALERTS_TOPIC_ARN": budget_alerts,
        "LSSTCTL_GUARD_FUNCTION_ARN": triggers["guard"],
        # A pass over more than guard_single_pass_clusters clusters sends its other shares here.
        "LSSTCTL_GUARD_FUNCTION_NAME": TRIGGER_FUNCTIONS["guard"][0],
        "LSSTCTL_RECONCILER_FUNCTION_ARN": triggers["reconciler"],
        "LSSTCTL_QUEUE_PROBE_DOCUMENT": probe,
        "LSSTCTL_NODE_CAP_DOCUMENT": node_cap,
        **people,
    }
