"""The glue that makes moto behave like AWS: SSM runs commands, Lambda runs handlers."""

from __future__ import annotations

import json
import time
from datetime import UTC

import boto3
import pytest

from lsstctl.adapters.ssm_runner import SsmRunner
from lsstctl.emulator import glue
from lsstctl.errors import TransientError


@pytest.fixture
def head_node(aws, tmp_path):
    glue.install(glue.HeadNodeShell(env={"GREETING": "hello"}, workdir=str(tmp_path)))
    from lsstctl.emulator.bootstrap import ensure_pcluster_ami

    ec2 = boto3.client("ec2")
    image = ensure_pcluster_ami("us-east-1")
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    yield instance["InstanceId"]
    glue.uninstall()


def wait(runner: SsmRunner, command_id: str, instance: str):
    for _ in range(100):
        result = runner.result(command_id, instance)
        if result.done:
            return result
        time.sleep(0.05)
    raise AssertionError("command never finished")


def test_commands_run_with_real_exit_codes_and_output(head_node):
    runner = SsmRunner()
    ok = wait(runner, runner.send(head_node, 'echo "$GREETING"; echo oops >&2', comment="t"), head_node)
    assert (ok.status, ok.exit_code, ok.stdout, ok.stderr) == ("Success", 0, "hello\n", "oops\n")
    bad = wait(runner, runner.send(head_node, "exit 7", comment="t"), head_node)
    assert (bad.status, bad.exit_code) == ("Failed", 7)


def test_a_command_runs_on_the_instance_it_names_only(head_node, tmp_path):
    # Given other instances in the account (a cluster's compute nodes, other clusters)
    image = boto3.client("ec2").describe_instances(InstanceIds=[head_node])["Reservations"][0]["Instances"][0][
        "ImageId"
    ]
    boto3.client("ec2").run_instances(ImageId=image, MinCount=3, MaxCount=3, InstanceType="t3.micro")
    # When a command is sent to the head node, then it runs once (moto alone ran it on all four)
    runner = SsmRunner()
    wait(runner, runner.send(head_node, f"echo ran >> {tmp_path}/runs", comment="t"), head_node)
    assert (tmp_path / "runs").read_text() == "ran\n"


def test_a_long_command_is_in_progress_until_it_ends(head_node):
    runner = SsmRunner()
    command_id = runner.send(head_node, "sleep 0.5", comment="t")
    assert runner.result(command_id, head_node).status == "InProgress"
    assert wait(runner, command_id, head_node).status == "Success"


def test_terminated_instances_refuse_commands(head_node):
    boto3.client("ec2").terminate_instances(InstanceIds=[head_node])
    with pytest.raises(Exception, match="InvalidInstanceId"):
        SsmRunner().send(head_node, "true", comment="t")


def test_unknown_command_ids_are_reported_not_invented(head_node):
    with pytest.raises(Exception, match="InvalidCommandId|Invalid command id"):
        SsmRunner().result("00000000-0000-0000-0000-000000000000", head_node)


def test_handler_errors_keep_their_class_name_for_retry_and_catch():
    payload, errored = glue.invoke_in_process(
        "lambdas.launch_steps.lambda_handler",
        {"action": "no-such-step", "cluster": "c1"},
        glue.LambdaContext(function_name="f", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f"),
    )
    assert errored
    assert json.loads(payload)["errorType"] == "ValidationError"
    assert "unknown action" in json.loads(payload)["errorMessage"]


def test_throttling_becomes_a_transient_error(monkeypatch):
    from types import SimpleNamespace

    from botocore.exceptions import ClientError

    from lsstctl.handlers import step_handler

    runs = []

    def throttled(deps, event):
        runs.append(event.action)
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "DescribeInstances")

    settings = SimpleNamespace(step_attempts=2, step_backoff_seconds=0)
    monkeypatch.setattr("lsstctl.wiring.deps", lambda: SimpleNamespace(settings=settings, sleep=lambda _: None))
    handler = step_handler({"poll": throttled})
    context = glue.LambdaContext(
        function_name="f", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f"
    )
    with pytest.raises(TransientError):
        handler({"action": "poll", "cluster": "c1"}, context)
    assert runs == ["poll", "poll"]  # re-run in place once, then the workflow's Retry sees it


def test_eventbridge_delivers_to_lambda_and_step_functions(aws):
    from tests.integration.eventbridge_sink import RECEIVED

    events, lam, sfn = boto3.client("events"), boto3.client("lambda"), boto3.client("stepfunctions")
    role = boto3.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    glue.install(glue.HeadNodeShell())
    try:
        fn = lam.create_function(
            FunctionName="rec",
            Runtime="python3.12",
            Role=role,
            Handler="tests.integration.eventbridge_sink.lambda_handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        )["FunctionArn"]
        machine = sfn.create_state_machine(
            name="m",
            roleArn=role,
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        events.put_rule(Name="r", EventPattern=json.dumps({"source": ["test"]}))
        events.put_targets(
            Rule="r",
            Targets=[
                {"Id": "fn", "Arn": fn},
                {"Id": "sm", "Arn": machine, "InputPath": "$.detail"},
            ],
        )
        # A schedule on the same bus takes no events (moto matched it to all of them).
        events.put_rule(Name="every-minute", ScheduleExpression="rate(1 minute)")
        events.put_targets(Rule="every-minute", Targets=[{"Id": "fn", "Arn": fn}])
        RECEIVED.clear()
        events.put_events(Entries=[{"Source": "test", "DetailType": "t", "Detail": json.dumps({"cluster": "c1"})}])
        for _ in range(100):
            executions = sfn.list_executions(stateMachineArn=machine)["executions"]
            if RECEIVED and executions:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # room for a second, wrong, delivery to arrive
        assert len(RECEIVED) == 1, RECEIVED
        assert RECEIVED[0]["detail"] == {"cluster": "c1"} and RECEIVED[0]["source"] == "test"
        started = sfn.describe_execution(executionArn=executions[0]["executionArn"])
        assert json.loads(started["input"]) == {"cluster": "c1"}
    finally:
        glue.uninstall()


def test_the_emulator_evaluates_idle_alarms_as_cloudwatch_would(aws):
    from datetime import datetime, timedelta

    from lsstctl.adapters.cloudwatch import CloudWatchMonitor
    from lsstctl.emulator.alarms import evaluate_idle_alarms

    glue.install_alarm_events()
    try:
        monitor, cloudwatch = CloudWatchMonitor(), boto3.client("cloudwatch")
        monitor.ensure_idle_alarm("c1", idle_minutes=5)
        now = datetime.now(UTC).replace(second=30, microsecond=0)
        # Jobs in the queue in the window: not idle.
        for minute in range(5):
            monitor.publish_queue_depth("c1", 2 if minute == 3 else 0, now - timedelta(minutes=minute))

        def state(name: str) -> str:
            return cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]

        evaluate_idle_alarms(cloudwatch, now)
        assert state("lsstctl-idle-c1") == "OK"
        # Five empty minutes later: idle. And no data at all (a dead head node) is idle too.
        later = now + timedelta(minutes=5)
        for minute in range(5):
            monitor.publish_queue_depth("c1", 0, later - timedelta(minutes=minute))
        assert evaluate_idle_alarms(cloudwatch, later) == {"lsstctl-idle-c1": "ALARM"}
        monitor.ensure_idle_alarm("c2", idle_minutes=5)
        assert evaluate_idle_alarms(cloudwatch, later) == {"lsstctl-idle-c2": "ALARM"}
        assert state("lsstctl-idle-c1") == "ALARM"  # unchanged, so not reported again
    finally:
        glue.uninstall()


def test_the_ec2_tag_index_answers_as_moto_does(aws):
    """Tags looked up by id (the glue) give every listing and filter moto's own answer."""
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    for name, count in (("c1", 3), ("c2", 2), ("c10", 1)):
        ec2.run_instances(
            ImageId=image,
            InstanceType="t3.micro",
            MinCount=count,
            MaxCount=count,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "parallelcluster:cluster-name", "Value": name}]}
            ],
        )
        ec2.create_volume(
            AvailabilityZone="us-east-1a",
            Size=8,
            TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": "parallelcluster:cluster-name", "Value": name}]}
            ],
        )
    ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)  # untagged

    def answers() -> list:
        asked = []
        for filters in (
            [],
            [{"Name": "tag-key", "Values": ["parallelcluster:cluster-name"]}],
            [{"Name": "tag:parallelcluster:cluster-name", "Values": ["c1", "c10"]}],
            [{"Name": "tag:parallelcluster:cluster-name", "Values": ["c2"]}],
            [{"Name": "tag:parallelcluster:cluster-name", "Values": ["c1*", "x"]}],
            [{"Name": "tag-value", "Values": ["c?"]}],
        ):
            instances = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
            volumes = ec2.describe_volumes(Filters=filters)["Volumes"]
            asked.append(
                sorted((x.get("InstanceId") or x["VolumeId"], str(x.get("Tags"))) for x in instances + volumes)
            )
        return asked

    before = answers()
    glue.install_ec2_tag_index()
    try:
        assert answers() == before
        assert len(before[2]) == 6 and len(before[3]) == 3  # c1 and c10: 4 nodes, 2 volumes
        assert len(before[4]) == 6 and len(before[5]) == 7  # patterns: c1 and c10; c1 and c2
    finally:
        glue.uninstall()


def test_the_ec2_instance_lookup_answers_as_moto_does(aws):
    """An instance found by id from the newest reservation (the glue): moto's own answers."""
    from botocore.exceptions import ClientError

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids = [
        i["InstanceId"]
        for kind in ("t3.micro", "t3.small", "t3.medium")
        for i in ec2.run_instances(ImageId=image, InstanceType=kind, MinCount=2, MaxCount=2)["Instances"]
    ]

    def answers() -> list:
        found = [ec2.describe_instance_attribute(InstanceId=i, Attribute="instanceType")["InstanceType"] for i in ids]
        try:
            ec2.describe_instance_attribute(InstanceId="i-0123456789abcdef0", Attribute="instanceType")
        except ClientError as error:
            found.append(error.response["Error"]["Code"])
        return found

    before = answers()
    glue.install_ec2_instance_lookup()
    try:
        assert answers() == before
        assert before[0]["Value"] == "t3.micro" and before[-2]["Value"] == "t3.medium"
        assert before[-1] == "InvalidInstanceID.NotFound"
        volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
        ec2.attach_volume(VolumeId=volume, InstanceId=ids[2], Device="/dev/sdf")  # found through the glue
        attached = ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]["Attachments"]
        assert [a["InstanceId"] for a in attached] == [ids[2]]
    finally:
        glue.uninstall()


def test_the_cloudwatch_metric_index_answers_as_moto_does(aws):
    """GetMetricData with each query's datapoints found by lookup (the glue) gives moto's own
    answer: single-dimension queries (the queue depth's), others, units, both orders."""
    from datetime import UTC, datetime, timedelta

    cloudwatch = boto3.client("cloudwatch")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for minute in range(12):
        at = now - timedelta(minutes=minute)
        for cluster, depth in (("c1", minute % 3), ("c2", 0), ("c10", 5)):
            cloudwatch.put_metric_data(
                Namespace=f"LSST/{cluster}",
                MetricData=[
                    {
                        "MetricName": "QueueDepth",
                        "Dimensions": [{"Name": "Cluster", "Value": cluster}],
                        "Timestamp": at,
                        "Value": depth,
                        "Unit": "Count",
                    }
                ],
            )
        cloudwatch.put_metric_data(
            Namespace="Other",
            MetricData=[
                {
                    "MetricName": "QueueDepth",
                    "Dimensions": [{"Name": "Cluster", "Value": "c1"}, {"Name": "Queue", "Value": "q"}],
                    "Timestamp": at,
                    "Value": 7,
                },
                {"MetricName": "Plain", "Timestamp": at, "Value": minute},
            ],
        )

    def stat(i: int, namespace: str, name: str, dimensions: list[dict[str, str]], **extra: str) -> dict:
        metric = {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions}
        return {"Id": f"q{i}", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum", **extra}}

    def one(cluster: str) -> list[dict[str, str]]:
        return [{"Name": "Cluster", "Value": cluster}]

    asked = [
        [stat(i, f"LSST/{c}", "QueueDepth", one(c)) for i, c in enumerate(("c1", "c2", "c10", "c3"))],
        [stat(0, "LSST/c1", "QueueDepth", one("c1"), Unit="Count"), stat(1, "LSST/c2", "QueueDepth", one("c2"))],
        [stat(0, "Other", "QueueDepth", [*one("c1"), {"Name": "Queue", "Value": "q"}]), stat(1, "Other", "Plain", [])],
    ]

    def answers() -> list:
        found = []
        for queries in asked:
            for order in ("TimestampAscending", "TimestampDescending"):
                for start in (now - timedelta(minutes=30), now - timedelta(minutes=4)):
                    answer = cloudwatch.get_metric_data(
                        MetricDataQueries=queries, StartTime=start, EndTime=now + timedelta(minutes=1), ScanBy=order
                    )
                    found.append([(r["Id"], r["Timestamps"], r["Values"]) for r in answer["MetricDataResults"]])
        return found

    before = answers()
    glue.install_cloudwatch_metric_index()
    try:
        assert answers() == before
        busy = before[0]  # c1, c2, c10, c3 over 30 minutes
        assert [len(values) for _, _, values in busy] == [12, 12, 12, 0] and max(busy[2][2]) == 5
    finally:
        glue.uninstall()


def test_dynamodb_values_answered_as_kept_read_as_moto_answers_them(aws):
    """Attribute values moto keeps in the wire's form answered as they are (the glue) read
    back exactly as moto's own walk answers them: every type, nested, empty, binary (walked)."""
    from decimal import Decimal

    from lsstctl.adapters.dynamodb_state import table_definition

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**table_definition("glue-values"))
    table = boto3.resource("dynamodb").Table("glue-values")
    doc = {
        "name": "c1",
        "n": Decimal("1.5"),
        "whole": 3,
        "flag": True,
        "none": None,
        "empty": "",
        "list": [1, "two", {"three": [Decimal("3.25"), False]}, []],
        "map": {"inner": {"deeper": {"s": "x", "n": -7}}, "nothing": {}},
        "strings": {"a", "b"},
        "numbers": {1, 2},
    }
    for i in range(5):
        table.put_item(Item={"pk": f"CLUSTER#c{i}", "sk": "CLUSTER", "billing": "1", "doc": doc, "i": i})
    table.put_item(Item={"pk": "CLUSTER#bin", "sk": "CLUSTER", "billing": "1", "raw": b"\x00\xff", "set": {b"a"}})
    keys = [{"pk": f"CLUSTER#c{i}", "sk": "CLUSTER"} for i in range(5)] + [{"pk": "CLUSTER#bin", "sk": "CLUSTER"}]

    def answers() -> list:
        found = [dynamodb.get_item(TableName="glue-values", Key={k: {"S": v} for k, v in key.items()}) for key in keys]
        found.append(dynamodb.scan(TableName="glue-values"))
        found.append(
            dynamodb.query(
                TableName="glue-values",
                IndexName="by_billing",
                KeyConditionExpression="billing = :b",
                ExpressionAttributeValues={":b": {"S": "1"}},
            )
        )
        wanted = [{k: {"S": v} for k, v in key.items()} for key in keys]
        found.append(dynamodb.batch_get_item(RequestItems={"glue-values": {"Keys": wanted}})["Responses"])
        found.append([table.get_item(Key=key)["Item"] for key in keys])  # and through the resource
        for answer in found:
            if isinstance(answer, dict):
                answer.pop("ResponseMetadata", None)
        return found

    before = answers()
    glue.install_dynamodb_value_passthrough()
    try:
        after = answers()
        assert after == before
        assert after[-1][0]["doc"] == doc and after[-1][-1]["raw"].value == b"\x00\xff"
    finally:
        glue.uninstall()
    assert glue._state.get("dynamodb_values") is None


def _connections_queued(server_class: type, clients: int = 50) -> int:
    """How many of `clients` connecting at once get through while the server accepts none
    (as when the API is busy): the listen backlog decides."""
    import socket
    from http.server import BaseHTTPRequestHandler

    server = server_class(("127.0.0.1", 0), BaseHTTPRequestHandler)
    sockets = []
    try:
        for _ in range(clients):
            sock = socket.socket()
            sock.settimeout(0.2)
            sockets.append(sock)
            try:
                sock.connect(server.server_address)
                sock.send(b"x")
            except OSError:
                pass
        # A connection the kernel did not queue is not established (its SYN was dropped)
        return sum(1 for sock in sockets if _established(sock))
    finally:
        for sock in sockets:
            sock.close()
        server.server_close()


def _established(sock) -> bool:
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


def test_the_local_api_queues_a_burst_of_connections():
    """Fifty clients at once while the API accepts nothing: all are queued (socketserver's
    backlog of 5, chalice's default, leaves most of them out: `make bench-load` lost 18 of 50
    launches to resets)."""
    from chalice.local import ThreadedHTTPServer

    from lsstctl.emulator.runtime import api_server_class

    assert _connections_queued(api_server_class()) == 50
    assert _connections_queued(ThreadedHTTPServer) < 50  # what the backlog fixes
