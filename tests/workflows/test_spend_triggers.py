"""Teardown triggers end to end on the emulator: the idle alarm through EventBridge, AWS
Budgets through SNS, each delivered twice; and a failed archive that keeps the data."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from lsstctl import wiring
from lsstctl.domain.models import ClusterSpec, ClusterState, JobSpec
from lsstctl.emulator.clock import VirtualClock
from lsstctl.services import clusters, jobs, ledgers
from lsstctl.services.identity import Principal
from tests.conftest import cluster_spec, live_instances, wait_execution
from tests.integration.test_guard import BUDGET_MESSAGE


def ready_cluster(owner: str) -> tuple[str, str]:
    """A ready cluster of `owner`'s: its name and its id (what AWS and the records call it)."""
    name = f"{owner}-{uuid.uuid4().hex[:6]}"
    cluster = clusters.launch_cluster(wiring.deps(), Principal(owner), ClusterSpec.model_validate(cluster_spec(name)))
    assert wait_execution(cluster.launch_execution)["status"] == "SUCCEEDED"
    return name, cluster.id


def wait_state(cid: str, states: set[ClusterState], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        record = wiring.deps().store.get_cluster(cid)
        if record.state in states:
            return record
        assert time.monotonic() < deadline, f"{cid} still {record.state}"
        time.sleep(0.2)


def teardowns_of(cid: str) -> list[str]:
    sfn = boto3.client("stepfunctions")
    arn = wiring.deps().settings.teardown_state_machine_arn
    return [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"] if f"-{cid}-" in e["name"]]


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def test_an_idle_alarm_reaches_teardown_through_eventbridge_once(emulator):
    _, cid = ready_cluster("dana")
    cloudwatch = boto3.client("cloudwatch")
    alarm = f"lsstctl-idle-{cid}"
    # Right after ready, an alarm still sees the install's empty queue: it is reset.
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="idle")
    wait_for(lambda: cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"] == "OK")
    assert wiring.deps().store.get_cluster(cid).state == ClusterState.READY
    # Once the cluster has been ready for its idle minutes (60), the alarm (twice, as
    # events may repeat)...
    clock = VirtualClock()
    clock.advance(61 * 60)
    wiring.use_clock(clock)
    try:
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="idle")
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test")
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="idle again")
        # ...ends the cluster once, for idleness, and its alarm is gone
        record = wait_state(cid, {ClusterState.DELETED})
    finally:
        wiring.use_clock(None)
    assert record.teardown_reason == "idle" and len(teardowns_of(cid)) == 1
    assert record.teardown["outcome"] == "deleted" and record.teardown["final_spend_usd"] > 0
    assert cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"] == []
    assert live_instances(cid) == []


def test_an_aws_budgets_notification_reaches_teardown_through_sns_once(emulator):
    _, cid = ready_cluster("erin")
    sns = boto3.client("sns")
    topic = emulator.settings_env["LSSTCTL_BUDGET_ALERTS_TOPIC_ARN"]
    for _ in range(2):  # SNS delivers at least once
        sns.publish(
            TopicArn=topic, Message=BUDGET_MESSAGE.format(name="lsstctl-owner-erin").replace("> $80.00", "> $100.00")
        )
    record = wait_state(cid, {ClusterState.DELETED})
    assert record.teardown_reason == "aws_budget" and len(teardowns_of(cid)) == 1


def test_a_busy_cluster_whose_publisher_died_is_not_idle_and_its_job_completes(emulator):
    """A job runs in the real Slurm while the head node's queue-depth publisher is gone (its
    cron entry lost): no data, so the idle alarm fires. Before tearing down, the control plane
    asks Slurm on the head node (the queue probe document, through SSM): busy. No teardown,
    the alarm is reset, the publisher's cron entry is back, and the job runs to completion."""
    from pathlib import Path

    name, cid = ready_cluster("fay")
    deps = wiring.deps()
    # The job runs until the test releases it (however slow the machine, it is still running
    # when Slurm is asked).
    release = Path(emulator.workdir) / f"release-{cid}"
    job = jobs.submit_job(
        deps, Principal("fay"), name, JobSpec(command=f"while [ ! -e {release} ]; do sleep 0.2; done; echo finished")
    )
    wait_for(lambda: wiring.deps().store.get_job(cid, job.job_id).state.value == "running", timeout=60)
    cron = Path(emulator.workdir) / "nodes" / cid / "etc" / "cron.d" / "lsstctl-queue-depth"
    cron.unlink()  # the publisher dies
    cloudwatch = boto3.client("cloudwatch")
    alarm = f"lsstctl-idle-{cid}"
    clock = VirtualClock()
    clock.advance(61 * 60)  # ready for longer than its idle minutes (60)
    wiring.use_clock(clock)
    try:
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="no queue-depth data")
        wait_for(lambda: (wiring.deps().store.get_cluster(cid).idle_check or {}).get("verdict") == "busy", timeout=60)
    finally:
        wiring.use_clock(None)
    record = wiring.deps().store.get_cluster(cid)
    assert record.state == ClusterState.READY and record.teardown_execution is None
    # The alarm may be delivered twice (at least once, as EventBridge does): a second probe finds
    # the publisher the first one restored running. Either way its cron entry, deleted above,
    # is back: only the probe puts it there.
    assert record.idle_check["jobs"] >= 1 and record.idle_check["publisher"] in {"restored", "running"}
    assert cron.is_file()  # the probe put the publisher back
    wait_for(lambda: cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"] == "OK")
    assert wiring.deps().store.get_job(cid, job.job_id).state.value == "running"
    release.touch()
    assert wait_execution(job.execution)["status"] == "SUCCEEDED"
    assert wiring.deps().store.get_job(cid, job.job_id).state.value == "completed"
    assert teardowns_of(cid) == []
    clusters.delete_cluster(wiring.deps(), Principal("fay"), name)
    assert wait_state(cid, {ClusterState.DELETED}).teardown_reason == "user"


def test_a_failed_archive_stops_compute_keeps_storage_and_tells_the_owner(emulator, monkeypatch):
    name, cid = ready_cluster("finn")
    deps = wiring.deps()
    job = jobs.submit_job(deps, Principal("finn"), name, JobSpec(command="echo precious > result.txt"))
    assert wait_execution(job.execution)["status"] == "SUCCEEDED"
    # Given an archive that cannot be written
    monkeypatch.setenv("LSSTCTL_ARCHIVE_BUCKET", "no-such-bucket")
    wiring.reset()
    record = clusters.request_teardown(wiring.deps(), cid, reason="user")
    assert wait_execution(record.teardown_execution)["status"] == "FAILED"
    record = wiring.deps().store.get_cluster(cid)
    # Then compute is gone, the head node is stopped (not terminated), storage and results kept...
    assert record.state == ClusterState.FAILED and record.failure["code"] == "ArchiveFailedError"
    ec2 = boto3.client("ec2")
    kept = ec2.describe_instances(InstanceIds=live_instances(cid))["Reservations"]
    states = sorted(
        (t["Value"], i["State"]["Name"])
        for r in kept
        for i in r["Instances"]
        for t in i["Tags"]
        if t["Key"] == "parallelcluster:node-type"
    )
    assert states == [("HeadNode", "stopped")]
    volumes = ec2.describe_volumes(Filters=[{"Name": "tag:parallelcluster:cluster-name", "Values": [cid]}])["Volumes"]
    assert len(volumes) == 1
    output = emulator.workdir / "nodes" / cid / "shared" / "outputs" / job.job_id / "result.txt"
    assert output.read_text() == "precious\n"
    # ...its ongoing cost (storage only) is reported, and the owner is told
    assert record.teardown["outcome"] == "failed"
    storage_only = [b for b in ledgers.current(wiring.deps(), cid, record.generation)["breakdown"] if b["billing"]]
    assert [b["role"] for b in storage_only] == ["storage"]
    assert record.teardown["remaining_burn_usd_per_hour"] == pytest.approx(storage_only[0]["hourly_usd"], rel=1e-3)
    sqs = boto3.client("sqs")
    inbox = emulator.settings_env["LSSTCTL_NOTIFICATIONS_INBOX_URL"]
    notes = [
        json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert any(n.get("cluster") == name and n.get("outcome") == "failed" for n in notes)
    # And once the archive works again, DELETE finishes the job without losing the results
    monkeypatch.undo()
    wiring.reset()
    retry = clusters.delete_cluster(wiring.deps(), Principal("finn"), name)
    assert wait_execution(retry.teardown_execution)["status"] == "SUCCEEDED"
    assert wiring.deps().store.get_cluster(cid).state == ClusterState.DELETED
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="lsstctl-archive", Prefix=f"finn/{name}/")["Contents"]
    ]
    assert f"finn/{name}/g1/{job.job_id}/result.txt" in keys
    assert live_instances(cid) == []


def test_the_head_nodes_publisher_reports_queue_depth_each_minute(emulator):
    # Given a ready cluster (its install put the publisher in the head node's cron)
    _, cid = ready_cluster("gwen")
    cron = emulator.workdir / "nodes" / cid / "etc" / "cron.d" / "lsstctl-queue-depth"
    assert cron.read_text().startswith("* * * * * root ")
    # When the emulator's minute passes (cron, alarm evaluation, guard)
    emulator.tick()
    # Then CloudWatch holds this cluster's queue depth, published by the real script
    points = boto3.client("cloudwatch").get_metric_statistics(
        Namespace=f"LsstControlPlane/Slurm/{cid}",
        MetricName="QueueDepth",
        Dimensions=[{"Name": "Cluster", "Value": cid}],
        StartTime=datetime.now(UTC) - timedelta(minutes=5),
        EndTime=datetime.now(UTC) + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert points and points[0]["Maximum"] >= 0
    ledger = ledgers.current(wiring.deps(), cid, 1)
    assert ledger["spend_usd"] > 0 and ledger["state"] == "ready"
    clusters.request_teardown(wiring.deps(), cid, reason="user")
    wait_state(cid, {ClusterState.DELETED})
