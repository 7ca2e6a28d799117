"""The guard and the teardown triggers, on moto with a clock we control: budget, lifetime,
idle (alarm and missing data), AWS Budgets notifications, warnings, and their repeats."""
from __future__ import annotations

import json

import boto3
import pytest

from lsstctl import wiring
from lsstctl.domain.cost import spend_ceiling
from lsstctl.domain.models import ClusterSpec, ClusterState
from lsstctl.emulator.clock import VirtualClock
from lsstctl.services import clusters, costs, triggers
from lsstctl.services.budget import teardown_timing
from lsstctl.services.identity import Principal
from tests.conftest import cluster_spec
from tests.integration.plane import ALICE, cid, ready, tick

# Burns about $0.75/h from the start, so budgets of a dollar or two end within ~3 hours.
FAST_QUEUE = [{"name": "compute", "instance_types": ["c5.2xlarge"], "min_nodes": 2, "max_nodes": 3}]


def publish_busy(name: str, clock: VirtualClock) -> None:
    """Alice's cluster `name`'s head node reports jobs waiting."""
    wiring.deps().monitor.publish_queue_depth(cid(name), 3, clock())


def test_budget_teardown_starts_before_spend_can_reach_the_budget(plane):
    # Given a $1 cluster burning about $0.75/h: t3.medium head, two c5.2xlarge, gp3 100 GiB
    cluster = ready("tight", plane, budget_usd=1, idle_minutes=600, queues=FAST_QUEUE)
    deps = wiring.deps()
    timing = teardown_timing(deps)
    # When the guard ticks every minute while jobs keep it busy
    for _ in range(600):
        publish_busy("tight", plane)
        summary = tick(plane)
        if summary["teardowns"]:
            break
    # Then it starts teardown for the budget, at a moment when waiting longer was unsafe
    assert summary["teardowns"] == {cid("tight"): "budget"}
    record = deps.store.get_cluster(cid("tight"))
    assert record.state == ClusterState.TEARING_DOWN and record.teardown_reason == "budget"
    ledger = deps.store.get_ledger(cid("tight"), cluster.generation)
    assert ledger["spend_usd"] < 1.0
    report_ceiling = spend_ceiling(costs.meter(deps, record, deps.inventory.observe(plane()).get(cid("tight"), []), plane()),
                                   guard_interval_seconds=60, timing=timing)
    assert report_ceiling >= 1.0
    # And the ledger explains it: spend, burn, projection, breakdown by resource
    roles = sorted(b["role"] for b in ledger["breakdown"])
    assert roles == ["compute", "compute", "head", "storage"]
    assert ledger["burn_usd_per_hour"] > 0 and ledger["projected_budget_at"]


def test_lifetime_ends_a_busy_cluster(plane):
    ready("short", plane, max_lifetime_hours=1, idle_minutes=600, budget_usd=100)
    results = []
    for _ in range(62):
        publish_busy("short", plane)
        results.append(tick(plane)["teardowns"])
    assert {cid("short"): "lifetime"} in results
    assert wiring.deps().store.get_cluster(cid("short")).teardown_reason == "lifetime"


def test_missing_queue_data_counts_as_idle_and_busy_queues_do_not(plane):
    ready("quiet", plane, idle_minutes=10, budget_usd=100)
    ready("busy", plane, idle_minutes=10, budget_usd=100)
    seen = {}
    for _ in range(12):
        publish_busy("busy", plane)  # "quiet"'s head node publishes nothing: dead or idle
        seen.update(tick(plane)["teardowns"])
    assert seen == {cid("quiet"): "idle"}
    assert wiring.deps().store.get_cluster(cid("busy")).state == ClusterState.READY


def test_idle_alarm_events_end_the_cluster_once(plane):
    ready("alarmed", plane, idle_minutes=30, budget_usd=100)
    alarm = {"alarmName": f"lsstctl-idle-{cid('alarmed')}", "state": {"value": "ALARM"}}
    # An alarm right after ready looks back into the install: reset, not teardown.
    assert triggers.on_idle_alarm(wiring.deps(), alarm)["action"] == "reset"
    state = boto3.client("cloudwatch").describe_alarms(AlarmNames=[f"lsstctl-idle-{cid('alarmed')}"])["MetricAlarms"][0]
    assert state["StateValue"] == "OK"
    assert wiring.deps().store.get_cluster(cid("alarmed")).state == ClusterState.READY
    plane.advance(31 * 60)
    first = triggers.on_idle_alarm(wiring.deps(), alarm)
    again = triggers.on_idle_alarm(wiring.deps(), alarm)  # EventBridge delivers at least once
    assert (first["action"], again["action"]) == ("teardown", "none")  # the repeat finds it going
    record = wiring.deps().store.get_cluster(cid("alarmed"))
    assert record.teardown_reason == "idle"
    assert [t.state for t in record.history].count("tearing_down") == 1
    assert triggers.on_idle_alarm(wiring.deps(), {**alarm, "state": {"value": "OK"}})["action"] == "none"


def test_the_idle_alarm_exists_while_ready_and_goes_with_teardown(plane):
    ready("watched", plane, idle_minutes=15, budget_usd=100)
    cw = boto3.client("cloudwatch")
    alarm = cw.describe_alarms(AlarmNames=[f"lsstctl-idle-{cid('watched')}"])["MetricAlarms"][0]
    assert (alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (15, "breaching")
    from lsstctl.services.teardown_workflow import begin_teardown

    record = clusters.request_teardown(wiring.deps(), cid("watched"), reason="user")
    begin_teardown(wiring.deps(), cid("watched"), record.generation, record.teardown_execution, "user")
    assert cw.describe_alarms(AlarmNames=[f"lsstctl-idle-{cid('watched')}"])["MetricAlarms"] == []


BUDGET_MESSAGE = """AWS Budget Notification November 24, 2026
AWS Account 123456789012

Dear AWS Customer,

You requested that we alert you when the ACTUAL Cost associated with your {name} budget is greater than $80.00 for the current month.

Budget Name: {name}
Budget Type: Cost
Budgeted Amount: $100.00
Alert Type: ACTUAL
Alert Threshold: > $80.00
ACTUAL Amount: $85.20
"""


def test_an_owners_aws_budget_ends_that_owners_clusters_once(plane):
    ready("mine", plane, budget_usd=100)
    deps = wiring.deps()
    bobs = clusters.launch_cluster(deps, Principal("bob"), ClusterSpec.model_validate(cluster_spec("theirs")))
    message = BUDGET_MESSAGE.format(name="lsstctl-owner-alice")
    # An earlier threshold (80%) only warns.
    early = message.replace("Alert Threshold: > $80.00", "Alert Threshold: > $80.00").replace("Budgeted Amount: $100.00", "Budgeted Amount: $100.00")
    assert triggers.on_budget_notification(deps, early) == {
        "budget": "lsstctl-owner-alice", "owner": "alice", "teardowns": [], "warned": [cid("mine")]}
    at_budget = message.replace("Alert Threshold: > $80.00", "Alert Threshold: > $100.00")
    assert triggers.on_budget_notification(deps, at_budget)["teardowns"] == [cid("mine")]
    assert triggers.on_budget_notification(deps, at_budget)["teardowns"] == []  # repeated: nothing new
    assert deps.store.get_cluster(cid("mine")).teardown_reason == "aws_budget"
    assert deps.store.get_cluster(bobs.id).state == ClusterState.REQUESTED
    # The account-wide backstop ends everyone's.
    backstop = BUDGET_MESSAGE.format(name="lsstctl-account").replace("> $80.00", "> $100.00")
    assert triggers.on_budget_notification(deps, backstop)["teardowns"] == [bobs.id]


def test_warnings_at_50_80_90_percent_are_sent_once(plane):
    ready("warned", plane, budget_usd=2, idle_minutes=600, queues=FAST_QUEUE)
    crossed = []
    for _ in range(900):
        publish_busy("warned", plane)
        summary = tick(plane)
        crossed += summary["warnings"].get(cid("warned"), [])
        if summary["teardowns"]:
            break
    assert crossed == [50, 80, 90]
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="lsstctl-notifications-inbox")["QueueUrl"]
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert sorted(b["threshold_percent"] for b in bodies if "threshold_percent" in b) == [50, 80, 90]


def test_a_budget_too_small_for_the_cluster_is_refused_at_launch(plane):
    from lsstctl.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        clusters.launch_cluster(wiring.deps(), ALICE, ClusterSpec.model_validate(cluster_spec(
            "huge", budget_usd=5, queues=[{"name": "q", "instance_types": ["c5.18xlarge"], "max_nodes": 50}])))
    assert exc.value.field == "budget_usd" and "at least $" in exc.value.message
