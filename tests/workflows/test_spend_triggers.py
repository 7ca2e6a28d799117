"""Teardown triggers end to end on the emulator: the idle alarm through EventBridge, AWS
Budgets through SNS, each delivered twice; and a failed archive that keeps the data."""
from __future__ import annotations

import json
import time
import uuid

import boto3

from lsstctl import wiring
from lsstctl.domain.models import ClusterSpec, ClusterState, JobSpec
from lsstctl.services import clusters, jobs
from lsstctl.services.identity import Principal
from tests.conftest import cluster_spec, live_instances, wait_execution
from tests.integration.test_guard import BUDGET_MESSAGE


def ready_cluster(owner: str) -> str:
    name = f"{owner}-{uuid.uuid4().hex[:6]}"
    cluster = clusters.launch_cluster(wiring.deps(), Principal(owner), ClusterSpec.model_validate(cluster_spec(name)))
    assert wait_execution(cluster.launch_execution)["status"] == "SUCCEEDED"
    return name


def wait_state(name: str, states: set[ClusterState], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        record = wiring.deps().store.get_cluster(name)
        if record.state in states:
            return record
        assert time.monotonic() < deadline, f"{name} still {record.state}"
        time.sleep(0.2)


def teardowns_of(name: str) -> list[str]:
    sfn = boto3.client("stepfunctions")
    arn = wiring.deps().settings.teardown_state_machine_arn
    return [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"] if f"-{name}-" in e["name"]]


def test_an_idle_alarm_reaches_teardown_through_eventbridge_once(emulator):
    name = ready_cluster("dana")
    cloudwatch = boto3.client("cloudwatch")
    # The alarm exists from ready on; when it fires (twice, as events may repeat)...
    cloudwatch.set_alarm_state(AlarmName=f"lsstctl-idle-{name}", StateValue="ALARM", StateReason="idle")
    cloudwatch.set_alarm_state(AlarmName=f"lsstctl-idle-{name}", StateValue="OK", StateReason="test")
    cloudwatch.set_alarm_state(AlarmName=f"lsstctl-idle-{name}", StateValue="ALARM", StateReason="idle again")
    # ...the cluster is torn down once, for idleness, and its alarm is gone
    record = wait_state(name, {ClusterState.DELETED})
    assert record.teardown_reason == "idle" and len(teardowns_of(name)) == 1
    assert record.teardown["outcome"] == "deleted" and record.teardown["final_spend_usd"] > 0
    assert cloudwatch.describe_alarms(AlarmNames=[f"lsstctl-idle-{name}"])["MetricAlarms"] == []
    assert live_instances(name) == []


def test_an_aws_budgets_notification_reaches_teardown_through_sns_once(emulator):
    name = ready_cluster("erin")
    sns = boto3.client("sns")
    topic = emulator.settings_env["LSSTCTL_BUDGET_ALERTS_TOPIC_ARN"]
    for _ in range(2):  # SNS delivers at least once
        sns.publish(TopicArn=topic, Message=BUDGET_MESSAGE.format(name="lsstctl-owner-erin"))
    record = wait_state(name, {ClusterState.DELETED})
    assert record.teardown_reason == "aws_budget" and len(teardowns_of(name)) == 1


def test_a_failed_archive_stops_compute_keeps_storage_and_tells_the_owner(emulator, monkeypatch):
    name = ready_cluster("finn")
    deps = wiring.deps()
    job = jobs.submit_job(deps, Principal("finn"), name, JobSpec(command="echo precious > result.txt"))
    assert wait_execution(job.execution)["status"] == "SUCCEEDED"
    # Given an archive that cannot be written
    monkeypatch.setenv("LSSTCTL_ARCHIVE_BUCKET", "no-such-bucket")
    wiring.reset()
    record = clusters.request_teardown(wiring.deps(), name, reason="user")
    assert wait_execution(record.teardown_execution)["status"] == "FAILED"
    record = wiring.deps().store.get_cluster(name)
    # Then compute is stopped, the head node and storage (and the results) are kept...
    assert record.state == ClusterState.FAILED and record.failure["code"] == "ArchiveFailedError"
    ec2 = boto3.client("ec2")
    live = ec2.describe_instances(InstanceIds=live_instances(name))["Reservations"]
    roles = sorted(t["Value"] for r in live for i in r["Instances"] for t in i["Tags"] if t["Key"] == "parallelcluster:node-type")
    assert roles == ["HeadNode"]
    volumes = ec2.describe_volumes(Filters=[{"Name": "tag:parallelcluster:cluster-name", "Values": [name]}])["Volumes"]
    assert len(volumes) == 1
    output = emulator.workdir / "nodes" / name / "shared" / "outputs" / job.job_id / "result.txt"
    assert output.read_text() == "precious\n"
    # ...its ongoing cost is reported, and the owner is told
    assert record.teardown["outcome"] == "failed" and record.teardown["remaining_burn_usd_per_hour"] > 0
    sqs = boto3.client("sqs")
    inbox = emulator.settings_env["LSSTCTL_NOTIFICATIONS_INBOX_URL"]
    notes = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", [])]
    assert any(n.get("cluster") == name and n.get("outcome") == "failed" for n in notes)
    # And once the archive works again, DELETE finishes the job without losing the results
    monkeypatch.undo()
    wiring.reset()
    retry = clusters.request_teardown(wiring.deps(), name, reason="user", principal=Principal("finn"))
    assert wait_execution(retry.teardown_execution)["status"] == "SUCCEEDED"
    assert wiring.deps().store.get_cluster(name).state == ClusterState.DELETED
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="lsstctl-archive", Prefix=f"finn/{name}/")["Contents"]]
    assert f"finn/{name}/g1/{job.job_id}/result.txt" in keys
    assert live_instances(name) == []
