"""The guard and the teardown triggers, on moto with a clock we control: budget, lifetime,
idle (alarm and missing data), AWS Budgets notifications, warnings, and their repeats."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from lsstctl import wiring
from lsstctl.domain.cost import spend_ceiling
from lsstctl.domain.models import ClusterSpec, ClusterState
from lsstctl.emulator.clock import VirtualClock
from lsstctl.errors import ValidationError
from lsstctl.services import clusters, costs, ledgers, triggers
from lsstctl.services.budget import teardown_timing
from lsstctl.services.identity import Principal
from tests.conftest import cluster_spec
from tests.integration.plane import ALICE, cid, ready, tick

# Burns about $0.75/h from the start, so budgets of a dollar or two end within ~3 hours.
FAST_QUEUE = [{"name": "compute", "instance_types": ["c5.2xlarge"], "min_nodes": 2, "max_nodes": 3}]


def publish_busy(name: str, clock: VirtualClock) -> None:
    """Alice's cluster `name`'s head node reports jobs waiting."""
    wiring.deps().monitor.publish_queue_depth(cid(name), 3, clock())


def notifications() -> list[dict]:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="lsstctl-notifications-inbox")["QueueUrl"]
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


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
    ledger = ledgers.current(deps, cid("tight"), cluster.generation)
    assert ledger["spend_usd"] < 1.0
    report_ceiling = spend_ceiling(
        costs.meter(deps, record, deps.inventory.observe(plane()).get(cid("tight"), []), plane()),
        guard_interval_seconds=60,
        timing=timing,
    )
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


def test_a_busy_cluster_is_asked_about_once_an_idle_period_and_still_ends_on_the_minute(plane, monkeypatch):
    # Given a cluster whose queue has jobs every minute, idle after 10 quiet minutes
    ready("steady", plane, idle_minutes=10, budget_usd=100)
    key, deps = cid("steady"), wiring.deps()
    monitor = type(deps.monitor)
    asked: list[str] = []
    real = monitor.queue_depths
    monkeypatch.setattr(monitor, "queue_depths", lambda self, windows: asked.extend(windows) or real(self, windows))
    # When the guard ticks for 40 minutes
    for _ in range(40):
        publish_busy("steady", plane)
        assert tick(plane)["teardowns"] == {}
    # Then CloudWatch (billed per metric asked) was asked about it once an idle period, not
    # every minute after its first idle period (30 times)
    assert asked.count(key) in range(3, 6), asked
    assert "idle_not_before" in deps.store.get_ledger(key, 1)
    # When its queue empties, the guard ends it on the minute a check every minute would
    for _ in range(30):
        summary = tick(plane)
        now = plane()
        every_minute = deps.monitor.max_queue_depth(key, now - timedelta(minutes=10), now)
        if summary["teardowns"]:
            break
        assert every_minute is not None and every_minute > 0, f"idle at {now}, the guard did not see it"
    assert summary["teardowns"] == {key: "idle"}
    assert every_minute is None or every_minute <= 0


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
    early = message.replace("Alert Threshold: > $80.00", "Alert Threshold: > $80.00").replace(
        "Budgeted Amount: $100.00", "Budgeted Amount: $100.00"
    )
    assert triggers.on_budget_notification(deps, early) == {
        "budget": "lsstctl-owner-alice",
        "owner": "alice",
        "teardowns": [],
        "warned": [cid("mine")],
    }
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
    bodies = notifications()
    assert sorted(b["threshold_percent"] for b in bodies if "threshold_percent" in b) == [50, 80, 90]


@pytest.mark.parametrize("capacity", ["ondemand", "spot"])
def test_the_final_spend_is_the_ledgers_last_measurement_for_spot_and_on_demand_fleets(plane, capacity):
    """One price for the same node-seconds: the teardown's final record charges every node
    what the guard's ledger charged it (a spot node its zone's spot price, bounded below:
    moto reports $0.00001, which is no price), so the two agree to the cent."""
    from lsstctl.domain.pricing import SPOT_FLOOR_FRACTION
    from tests.integration.plane import play_teardown

    queue = [{**FAST_QUEUE[0], "capacity_type": capacity}]
    ready("fleet", plane, budget_usd=100, idle_minutes=600, queues=queue)
    deps = wiring.deps()
    for _ in range(30):
        publish_busy("fleet", plane)
        tick(plane)
    record = deps.store.get_cluster(cid("fleet"))
    last = ledgers.current(deps, cid("fleet"), record.generation)
    compute = [b for b in last["breakdown"] if b["role"] == "compute"]
    on_demand = deps.catalog.instance_hourly("us-east-1", "c5.2xlarge")
    expected = SPOT_FLOOR_FRACTION * on_demand if capacity == "spot" else on_demand
    assert [(b["pricing"], round(b["hourly_usd"], 6)) for b in compute] == [
        ("spot" if capacity == "spot" else "on-demand", round(expected, 6))
    ] * 2
    # The teardown runs at the instant of the guard's last pass: nothing more has been used.
    clusters.request_teardown(deps, cid("fleet"), reason="user")
    play_teardown("fleet")
    final = deps.store.get_cluster(cid("fleet")).teardown["final_spend_usd"]
    assert final == pytest.approx(last["spend_usd"], abs=1e-6)
    assert final > 0


class HeadNode:
    """The head node as SSM reaches it: what Slurm answers to the queue probe (`stdout`), or
    SSM's refusal (`error`). The triggers run that one document and never a shell."""

    def __init__(self, stdout: str = "", error: Exception | None = None, status: str = "Success"):
        self.stdout, self.error, self.status = stdout, error, status
        self.asked: list[tuple[str, str, dict[str, str]]] = []

    def run_document(self, instance_id, document, parameters, *, comment, timeout_seconds=120):
        self.asked.append((instance_id, document, parameters))
        if self.error is not None:
            raise self.error
        return f"cmd-{len(self.asked)}"

    def send(self, *args, **kwargs):
        raise AssertionError("a trigger ran a shell command")

    def result(self, command_id, instance_id):
        from lsstctl.ports import CommandResult

        return CommandResult(command_id, self.status, 0 if self.status == "Success" else 1, self.stdout, "")


def answering(monkeypatch, head: HeadNode) -> HeadNode:
    monkeypatch.setattr(wiring.deps(), "runner", head)
    return head


def busy(jobs: int) -> HeadNode:
    return HeadNode(json.dumps({"slurm": True, "jobs": jobs, "publisher": "restored"}))


def test_a_silent_publisher_with_jobs_in_slurm_is_not_idle(plane, monkeypatch):
    """The publisher died while a job runs: no queue-depth data. The guard asks Slurm (the
    probe document, on the head node), learns it is busy and ends nothing; the owner is told;
    it does not ask again within the idle period; the lifetime still ends the cluster."""
    cluster = ready("silent", plane, idle_minutes=10, budget_usd=100, max_lifetime_hours=1)
    head = answering(monkeypatch, busy(2))
    seen = {}
    for _ in range(25):
        summary = tick(plane)
        seen.update(summary["teardowns"])
        if summary.get("not_idle"):
            assert summary["not_idle"] == {cid("silent"): "busy"}
    assert seen == {}
    record = wiring.deps().store.get_cluster(cid("silent"))
    assert record.state == ClusterState.READY
    assert record.idle_check["verdict"] == "busy" and record.idle_check["jobs"] == 2
    assert record.idle_check["source"] == "guard" and record.idle_check["publisher"] == "restored"
    # Asked at 11 and at 22 minutes: once per idle period, the probe document on the head node.
    assert [(i, d) for i, d, _ in head.asked] == [(cluster.head_node_instance_id, "lsstctl-queue-probe")] * 2
    for _ in range(40):
        seen.update(tick(plane)["teardowns"])
    assert seen == {cid("silent"): "lifetime"}


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (HeadNode(json.dumps({"slurm": True, "jobs": 0, "publisher": "running"})), "idle"),
        # SSM cannot reach the instance (stopped, crashed): a dead head node
        (
            HeadNode(
                error=ClientError(
                    {"Error": {"Code": "InvalidInstanceId", "Message": "not in a valid state"}}, "SendCommand"
                )
            ),
            "silent",
        ),
        # the host answers, Slurm does not
        (HeadNode(json.dumps({"slurm": False}), status="Failed"), "silent"),
    ],
    ids=["idle", "dead-head-node", "dead-slurm"],
)
def test_an_idle_or_dead_head_node_is_still_torn_down_as_idle(plane, monkeypatch, head, verdict):
    ready("quiet2", plane, idle_minutes=10, budget_usd=100)
    answering(monkeypatch, head)
    seen = {}
    for _ in range(12):
        seen.update(tick(plane)["teardowns"])
    assert seen == {cid("quiet2"): "idle"}
    record = wiring.deps().store.get_cluster(cid("quiet2"))
    assert record.teardown_reason == "idle" and record.idle_check["verdict"] == verdict


def test_a_pass_out_of_time_for_questions_defers_them_and_ends_nothing(plane, monkeypatch):
    """A hung head node makes its question last `short_command_seconds`; a guard pass asks
    only within its allowance, and the clusters it did not ask about wait for the next pass."""
    ready("later", plane, idle_minutes=10, budget_usd=100)
    monkeypatch.setenv("LSSTCTL_GUARD_IDLE_QUESTIONS_SECONDS", "0")
    wiring.reset()
    wiring.use_clock(plane)
    head = answering(monkeypatch, HeadNode(json.dumps({"slurm": True, "jobs": 0, "publisher": "running"})))
    seen = {}
    for _ in range(12):
        summary = tick(plane)
        seen.update(summary["teardowns"])
    assert seen == {} and summary["not_idle"] == {cid("later"): "deferred"} and head.asked == []
    monkeypatch.setenv("LSSTCTL_GUARD_IDLE_QUESTIONS_SECONDS", "25")
    wiring.reset()
    wiring.use_clock(plane)
    answering(monkeypatch, head)
    assert tick(plane)["teardowns"] == {cid("later"): "idle"} and len(head.asked) == 1


def test_an_idle_alarm_on_a_busy_cluster_is_reset_and_a_failed_question_decides_nothing(plane, monkeypatch):
    ready("alarmed2", plane, idle_minutes=30, budget_usd=100)
    alarm = {"alarmName": f"lsstctl-idle-{cid('alarmed2')}", "state": {"value": "ALARM"}}
    plane.advance(31 * 60)
    cloudwatch = boto3.client("cloudwatch")

    def alarm_state() -> str:
        return cloudwatch.describe_alarms(AlarmNames=[alarm["alarmName"]])["MetricAlarms"][0]["StateValue"]

    answering(monkeypatch, busy(1))
    cloudwatch.set_alarm_state(AlarmName=alarm["alarmName"], StateValue="ALARM", StateReason="test")
    assert triggers.on_idle_alarm(wiring.deps(), alarm)["action"] == "busy"
    assert alarm_state() == "OK"  # it fires again if the cluster stays quiet
    # AWS throttles the question itself: nothing is decided, the alarm is reset, the record kept
    answering(
        monkeypatch,
        HeadNode(error=ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "SendCommand")),
    )
    cloudwatch.set_alarm_state(AlarmName=alarm["alarmName"], StateValue="ALARM", StateReason="test")
    assert triggers.on_idle_alarm(wiring.deps(), alarm)["action"] == "deferred"
    assert alarm_state() == "OK"
    record = wiring.deps().store.get_cluster(cid("alarmed2"))
    assert record.state == ClusterState.READY and record.idle_check["verdict"] == "busy"
    # Slurm answers with an empty queue: the teardown goes on
    answering(monkeypatch, HeadNode(json.dumps({"slurm": True, "jobs": 0, "publisher": "running"})))
    assert triggers.on_idle_alarm(wiring.deps(), alarm)["action"] == "teardown"
    assert wiring.deps().store.get_cluster(cid("alarmed2")).teardown_reason == "idle"


def test_a_patched_budget_and_lifetime_take_effect_at_the_guards_next_pass(plane):
    from lsstctl.domain.models import ClusterChange

    ready("grown", plane, budget_usd=1, idle_minutes=600, max_lifetime_hours=1, queues=FAST_QUEUE)
    deps = wiring.deps()
    alice = Principal("alice")
    # Half an hour in, the owner raises the budget and extends the lifetime.
    for _ in range(30):
        publish_busy("grown", plane)
        assert tick(plane)["teardowns"] == {}
    clusters.change_cluster(deps, alice, "grown", ClusterChange(budget_usd=3, max_lifetime_hours=2))
    # Lowering a budget to what is already spent is refused, naming the field.
    spent = ledgers.current(deps, cid("grown"), 1)["spend_usd"]
    with pytest.raises(ValidationError) as refused:
        clusters.change_cluster(deps, alice, "grown", ClusterChange(budget_usd=round(spent * 0.9, 4)))
    assert refused.value.field == "budget_usd" and "spent" in refused.value.message
    ended = {}
    minutes = 30
    while not ended and minutes < 200:
        publish_busy("grown", plane)
        ended = tick(plane)["teardowns"]
        minutes += 1
    # The $1 budget would have ended it before its first hour; the old lifetime at 60 minutes.
    assert ended == {cid("grown"): "lifetime"} and minutes == 120  # two hours after the launch
    ledger = ledgers.current(deps, cid("grown"), 1)
    assert 1.0 < ledger["spend_usd"] < 3.0


# The scale governor --------------------------------------------------------------------------
CAP_QUEUE = [{"name": "compute", "instance_types": ["c5.2xlarge"], "min_nodes": 0, "max_nodes": 8}]


class CapHead:
    """Head nodes as the governor reaches them: the node cap document is applied (its caps
    recorded per instance) or fails; every other command goes to moto's SSM."""

    def __init__(self, runner, status: str = "Success"):
        self.runner, self.status = runner, status
        self.applied: dict[str, list[dict[str, int]]] = {}
        self.sent = 0

    def run_document(self, instance_id, document, parameters, *, comment, timeout_seconds=120):
        if document != wiring.deps().settings.node_cap_document:
            return self.runner.run_document(
                instance_id, document, parameters, comment=comment, timeout_seconds=timeout_seconds
            )
        self.sent += 1
        if self.status == "Success":
            caps = {q: int(n) for q, n in (pair.split("=") for pair in parameters["caps"].split())}
            self.applied.setdefault(instance_id, []).append(caps)
        return f"cap-{self.sent}"

    def send(self, *args, **kwargs):
        return self.runner.send(*args, **kwargs)

    def result(self, command_id, instance_id):
        from lsstctl.ports import CommandResult

        if not command_id.startswith("cap-"):
            return self.runner.result(command_id, instance_id)
        if self.status != "Success":
            return CommandResult(command_id, self.status, 4, "", "slurm_update error")
        return CommandResult(command_id, "Success", 0, '{"applied": true, "drained": 1, "resumed": 0}', "")

    def cap_of(self, cluster, queue: str = "compute") -> int | None:
        caps = self.applied.get(cluster.head_node_instance_id)
        return caps[-1][queue] if caps else None


def run_busy_fleet(plane, head: CapHead, name: str, until_minute: int = 600) -> tuple[dict, list[int]]:
    """Jobs want all 8 nodes; clustermgtd starts as many as the head node's cap allows (the
    whole queue when uncapped). Ticks until a teardown; checks the guard's invariant each pass."""
    deps = wiring.deps()
    caps_seen, summary = [], {}
    for _ in range(until_minute):
        record = deps.store.get_cluster(cid(name))
        cap = head.cap_of(record)
        deps.engine.set_compute_nodes(cid(name), "compute", "c5.2xlarge", 8 if cap is None else min(8, cap))
        caps_seen.append(cap)
        publish_busy(name, plane)
        summary = tick(plane)
        ledger = ledgers.current(deps, cid(name), record.generation)
        assert ledger["spend_usd"] < record.spec.budget_usd
        if summary["teardowns"]:
            break
    return summary, [c for c in caps_seen if c is not None]


@pytest.mark.parametrize("governor", [True, False])
def test_the_governor_caps_a_busy_fleet_as_its_budget_runs_down_and_uses_all_of_it(plane, monkeypatch, governor):
    """A fleet that would burn $2.77/h on a $3 budget: with the governor the cap falls, step
    by step, and the budget ends with one node's reserve left (>= 97.5 % used); without it the
    whole fleet's reserve is left (about 6 %). Never a cent over, at any pass."""
    monkeypatch.setenv("LSSTCTL_GOVERNOR", "true" if governor else "false")
    wiring.reset()
    head = answering(monkeypatch, CapHead(wiring.deps().runner))
    ready("fleet", plane, budget_usd=3, idle_minutes=600, queues=CAP_QUEUE)
    notifications()
    summary, caps = run_busy_fleet(plane, head, "fleet")
    deps = wiring.deps()
    record = deps.store.get_cluster(cid("fleet"))
    used = ledgers.current(deps, cid("fleet"), 1)["spend_usd"] / 3
    assert summary["teardowns"] == {cid("fleet"): "budget"}
    if not governor:
        assert caps == [] and record.governor is None and used < 0.95
        return
    assert used >= 0.975
    # Falling step by step; at the very end the last node may come and go as the burn until
    # the next pass (which the cap must leave room for) changes with it.
    assert caps[0] < 8 and min(caps) <= 1 and len(set(caps)) >= 3
    assert all(after <= before or after <= 1 for before, after in zip(caps, caps[1:])), caps
    assert record.governor["applied"] and record.governor["message"].startswith("capped at ")
    told = [b for b in notifications() if "caps" in b]
    assert len(told) == 1 and told[0]["capped"] and told[0]["runway_hours"] is not None


def test_a_raised_budget_lifts_the_cap_at_the_next_pass(plane, monkeypatch):
    from lsstctl.domain.models import ClusterChange

    head = answering(monkeypatch, CapHead(wiring.deps().runner))
    ready("raised", plane, budget_usd=3, idle_minutes=600, queues=CAP_QUEUE)
    deps = wiring.deps()
    for _ in range(200):
        record = deps.store.get_cluster(cid("raised"))
        if head.cap_of(record) is not None and head.cap_of(record) < 4:
            break
        cap = head.cap_of(record)
        deps.engine.set_compute_nodes(cid("raised"), "compute", "c5.2xlarge", 8 if cap is None else cap)
        publish_busy("raised", plane)
        assert tick(plane)["teardowns"] == {}
    view = costs.cluster_view(deps, ALICE, "raised")
    assert view["governor"]["capped"] and view["governor"]["runway_hours"] > 0
    assert view["governor"]["message"] == f"capped at {head.cap_of(record)} of 8 nodes by the budget"
    from lsstctl.services import chatops  # `/lsst status raised` says it too

    assert f"capped at {head.cap_of(record)} of 8 nodes by the budget" in chatops.status(deps, ALICE, "raised")
    notifications()
    clusters.change_cluster(deps, Principal("alice"), "raised", ClusterChange(budget_usd=30))
    publish_busy("raised", plane)
    summary = tick(plane)
    record = deps.store.get_cluster(cid("raised"))
    assert summary["caps"] == {cid("raised"): {"compute": 8}} and head.cap_of(record) == 8
    assert record.governor == {**record.governor, "capped": False, "applied": True, "message": "not capped"}
    assert [b["capped"] for b in notifications() if "caps" in b] == [False]


def test_caps_the_head_node_did_not_apply_keep_the_larger_reserve(plane, monkeypatch):
    """The head node fails the cap: the record says not applied, the guard keeps assuming the
    whole queue can run (it may) and tries again at its next pass."""
    head = answering(monkeypatch, CapHead(wiring.deps().runner, status="Failed"))
    ready("stuck", plane, budget_usd=3, idle_minutes=600, queues=CAP_QUEUE)
    deps = wiring.deps()
    full = 8 * deps.catalog.instance_hourly("us-east-1", "c5.2xlarge")
    deferred = []
    for _ in range(200):
        deps.engine.set_compute_nodes(cid("stuck"), "compute", "c5.2xlarge", 8)
        publish_busy("stuck", plane)
        summary = tick(plane)
        deferred += summary.get("caps_deferred", [])
        if summary["teardowns"]:
            break
    record = deps.store.get_cluster(cid("stuck"))
    assert summary["teardowns"] == {cid("stuck"): "budget"}
    assert deferred and set(deferred) == {cid("stuck")} and head.sent == len(deferred)
    assert record.governor["capped"] and not record.governor["applied"]
    ledger = ledgers.current(deps, cid("stuck"), 1)
    assert ledger["max_burn_usd_per_hour"] - ledger["base_burn_usd_per_hour"] == pytest.approx(full)


def test_a_budget_for_part_of_the_fleet_launches_capped_and_one_for_no_node_is_refused(plane, monkeypatch):
    big = [{"name": "q", "instance_types": ["c5.18xlarge"], "max_nodes": 50}]
    head = answering(monkeypatch, CapHead(wiring.deps().runner))
    # $5 carries a few of fifty c5.18xlarge through the guard's reaction and a teardown:
    # launched capped, the caps applied on the head node before it is ready.
    launched = ready("dear", plane, budget_usd=5, queues=big)
    assert launched.governor["capped"] and launched.governor["applied"] and launched.governor["by"] == "launch"
    cap = launched.governor["caps"]["q"]
    assert 0 < cap < 50 and head.cap_of(launched, "q") == cap
    assert launched.governor["message"] == f"capped at {cap} of 50 nodes by the budget"
    # Not even one node: refused, naming the field.
    with pytest.raises(ValidationError) as exc:
        clusters.launch_cluster(
            wiring.deps(), ALICE, ClusterSpec.model_validate(cluster_spec("tiny", budget_usd=0.2, queues=big))
        )
    assert exc.value.field == "budget_usd" and "even one compute node" in exc.value.message
    # Without the governor, the old rule: the whole fleet's reserve or nothing.
    monkeypatch.setenv("LSSTCTL_GOVERNOR", "false")
    wiring.reset()
    with pytest.raises(ValidationError) as exc:
        clusters.launch_cluster(
            wiring.deps(), ALICE, ClusterSpec.model_validate(cluster_spec("huge", budget_usd=5, queues=big))
        )
    assert exc.value.field == "budget_usd" and "at least $" in exc.value.message


def test_a_patched_max_nodes_is_applied_on_the_head_node_and_can_be_raised_back(plane, monkeypatch):
    from lsstctl.domain.models import ClusterChange

    head = answering(monkeypatch, CapHead(wiring.deps().runner))
    ready("limited", plane, budget_usd=100, idle_minutes=600, queues=CAP_QUEUE)
    deps = wiring.deps()
    alice = Principal("alice")
    changed = clusters.change_cluster(deps, alice, "limited", ClusterChange(max_nodes={"compute": 3}))
    assert changed.node_limits == {"compute": 3} and changed.changes[-1]["fields"] == {"max_nodes.compute": [8, 3]}
    # Repeating it changes nothing more; the guard applies it at its next pass.
    assert (
        clusters.change_cluster(deps, alice, "limited", ClusterChange(max_nodes={"compute": 3})).changes
        == changed.changes
    )
    publish_busy("limited", plane)
    assert tick(plane)["caps"] == {cid("limited"): {"compute": 3}}
    record = deps.store.get_cluster(cid("limited"))
    assert head.cap_of(record) == 3 and record.governor["applied"] and not record.governor["capped"]
    publish_busy("limited", plane)
    assert tick(plane).get("caps") is None  # held: nothing to apply again
    ledger = ledgers.current(deps, cid("limited"), 1)
    node = deps.catalog.instance_hourly("us-east-1", "c5.2xlarge")
    assert ledger["max_burn_usd_per_hour"] - ledger["base_burn_usd_per_hour"] == pytest.approx(3 * node)
    # Raised back to what it launched with
    clusters.change_cluster(deps, alice, "limited", ClusterChange(max_nodes={"compute": 8}))
    publish_busy("limited", plane)
    assert tick(plane)["caps"] == {cid("limited"): {"compute": 8}} and head.cap_of(record) == 8
    # Not above MaxCount at launch, not an unknown queue: 400 naming the field
    for bad in ({"compute": 9}, {"gpu": 1}):
        with pytest.raises(ValidationError) as refused:
            clusters.change_cluster(deps, alice, "limited", ClusterChange(max_nodes=bad))
        assert refused.value.field == "max_nodes"


@pytest.mark.parametrize("paged_read", ["answers", "fails"])
def test_a_failed_batched_read_costs_the_pass_none_of_its_clusters(plane, monkeypatch, paged_read):
    """The pass reads records and ledgers in pages and queue depths in batches; when one of
    these fails (AWS kept failing it), the pass reads by id, or each cluster's on its own, and
    every cluster is still metered."""
    from lsstctl.emulator.faults import FaultInjector
    from lsstctl.errors import TransientError

    for name in ("batched1", "batched2"):
        ready(name, plane, budget_usd=100, idle_minutes=10)
    for _ in range(12):
        publish_busy("batched1", plane)
        publish_busy("batched2", plane)
        tick(plane)
    before = {n: ledgers.current(wiring.deps(), cid(n), 1)["spend_usd"] for n in ("batched1", "batched2")}
    # Then the records and ledgers by id (BatchGetItem), failing too
    batched = {"GetMetricData"} if paged_read == "answers" else {"BatchGetItem", "GetMetricData"}

    def failed(most: int | None = None) -> None:
        raise TransientError("DynamoDB kept failing the query")

    plane.advance(600)  # an idle period since their queues were last asked about: asked now
    publish_busy("batched1", plane)
    publish_busy("batched2", plane)
    with FaultInjector(plan=lambda call: call.operation in batched) as faults:
        if paged_read == "fails":  # (the injector's clients are new ones)
            monkeypatch.setattr(wiring.deps().store, "billing_clusters_and_ledgers", failed)
        summary = tick(plane)
    assert {f.operation for f in faults.log} == batched
    assert summary["clusters"] == 2 and not summary.get("errors") and summary["teardowns"] == {}
    after = {n: ledgers.current(wiring.deps(), cid(n), 1)["spend_usd"] for n in ("batched1", "batched2")}
    assert all(after[n] > before[n] for n in before), (before, after)


def test_the_pass_records_its_duration_and_says_when_it_overran(plane, monkeypatch):
    ready("timed", plane, budget_usd=100)
    summary = tick(plane)
    assert summary["pass_seconds"] > 0 and "overran" not in summary
    deps = wiring.deps()
    # An interval shorter than any pass: the overrun is reported (logged and counted).
    monkeypatch.setattr(deps, "settings", deps.settings.model_copy(update={"guard_interval_seconds": 0}))
    plane.advance(60)
    assert costs.guard_tick(deps)["overran"] is True


def test_the_guard_writes_a_ledger_only_when_it_changes_and_readers_see_it_as_of_the_last_pass(plane, monkeypatch):
    """A steady cluster's ledger is written once, then again only when a node starts or a
    warning is given; what the API shows is carried forward to the guard's last pass, equal to
    measuring then, and stays there when the guard stops (no guess past what it saw)."""
    ready("steady", plane, budget_usd=2, idle_minutes=600)
    deps = wiring.deps()
    writes: list[str] = []
    put = deps.store.put_ledger
    monkeypatch.setattr(
        deps.store, "put_ledger", lambda cid_, gen, owner, ledger: (writes.append(cid_), put(cid_, gen, owner, ledger))
    )
    alice = ALICE
    for _ in range(30):
        plane.advance(60)
        publish_busy("steady", plane)
        costs.guard_tick(deps)
    assert writes == [cid("steady")]  # the first measurement; nothing changed since
    shown = costs.cluster_view(deps, alice, "steady")["cost"]
    history = costs.cost_history(deps, alice, "steady")["points"]
    # As of the last pass: what measuring then says
    record = deps.store.get_cluster(cid("steady"))
    measured = costs.meter(deps, record, deps.inventory.observe(plane()).get(cid("steady"), []), plane())
    assert shown["spend_usd"] == pytest.approx(measured.spend_usd, abs=1e-9) and measured.spend_usd > 0
    assert shown["measured_at"] == plane().isoformat()
    assert history[-1]["spend_usd"] == pytest.approx(measured.spend_usd, abs=1e-6)
    assert writes == [cid("steady")]
    # A compute node starts: written once more
    writes.clear()
    assert deps.engine.set_compute_nodes(cid("steady"), "compute", "c5.large", 2) == 2
    for _ in range(3):
        plane.advance(60)
        publish_busy("steady", plane)
        costs.guard_tick(deps)
    assert writes == [cid("steady")]
    # The guard stops: readers stay at its last pass
    frozen = costs.cluster_view(deps, alice, "steady")["cost"]["spend_usd"]
    plane.advance(3600)
    assert costs.cluster_view(deps, alice, "steady")["cost"]["spend_usd"] == frozen


def test_a_warning_is_asked_for_once_not_at_every_pass(plane, monkeypatch):
    ready("warned", plane, budget_usd=1, idle_minutes=600, queues=FAST_QUEUE)
    deps = wiring.deps()
    claims: list[int] = []
    claim = deps.store.claim_warning
    monkeypatch.setattr(deps.store, "claim_warning", lambda c, g, t: (claims.append(t), claim(c, g, t))[1])
    for _ in range(200):
        publish_busy("warned", plane)
        if tick(plane)["teardowns"]:
            break
    assert sorted(claims) == [50, 80, 90]
    assert ledgers.current(deps, cid("warned"), 1)["warned"] == [50, 80, 90]


class InProcessGuardFunction:
    """Lambda's Invoke of the guard's function, run in this process (the transport only: the
    adapter, the handler and its wiring are the product's)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict:
        from lambdas.guard import lambda_handler
        from lsstctl.emulator.glue import LambdaContext

        assert (FunctionName, InvocationType) == ("lsstctl-guard", "Event")
        event = json.loads(Payload)
        self.sent.append(event["guard_shard"])
        arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FunctionName}"
        lambda_handler(event, LambdaContext(function_name=FunctionName, invoked_function_arn=arn))
        return {"StatusCode": 202}


def test_a_pass_over_more_clusters_than_a_share_sends_the_rest_to_the_guards_own_function(plane, monkeypatch):
    """Five clusters, shares of two: this invocation meters two and sends the others to the
    guard's own function (asynchronously), measured as of the same instant: every cluster is
    metered once, none skipped; a share that cannot be sent is metered here."""
    from lsstctl.adapters.guard_shards import LambdaGuardShards

    names = [f"share{i}" for i in range(5)]
    ids = sorted(cid(n) for n in names)
    for name in names:
        ready(name, plane, budget_usd=100, idle_minutes=600)
    deps = wiring.deps()
    assert deps.settings.guard_function_name == "lsstctl-guard"  # as the template names it
    function = InProcessGuardFunction()
    monkeypatch.setattr(deps, "guard_shards", LambdaGuardShards("lsstctl-guard", client=function))
    monkeypatch.setattr(
        deps, "settings", deps.settings.model_copy(update={"guard_shard_size": 2, "guard_single_pass_clusters": 2})
    )
    metered: list[str] = []
    put = deps.store.put_ledger
    monkeypatch.setattr(
        deps.store, "put_ledger", lambda c, g, owner, ledger: (metered.append(c), put(c, g, owner, ledger))[1]
    )
    for name in names:
        publish_busy(name, plane)
    summary = tick(plane)
    # Two shares of clusters (the resources of no live record are the reconciler's then)
    assert summary["clusters_live"] == 5 and summary["clusters"] == 2 and summary["shares_sent"] == 2
    assert [s.get("clusters") for s in function.sent] == [ids[2:4], ids[4:]]
    assert {s["at"] for s in function.sent} == {ledgers.pass_stamp(plane())}
    # each share decides with the teardown timing the pass read once (not read again)
    timing = teardown_timing(deps)
    assert [s["timing"] for s in function.sent[:2]] == 2 * [
        {"stop_compute_seconds": timing.stop_compute_seconds, "total_seconds": timing.total_seconds}
    ]
    assert sorted(metered) == ids  # each once: none skipped, none twice
    for name in names:
        assert ledgers.current(deps, cid(name), 1)["measured_at"] == plane().isoformat()

    # A share that cannot be sent is metered here
    def refused(**call: object) -> dict:
        raise RuntimeError("Lambda refused the invoke")

    monkeypatch.setattr(function, "invoke", refused)
    plane.advance(60)
    summary = costs.guard_tick(deps)
    assert summary["clusters"] == 5 and summary["shares_sent"] == 0 and not summary.get("errors")


def test_a_shared_pass_leaves_the_resources_of_no_live_record_to_the_reconciler(plane, monkeypatch):
    """A node tagged for a cluster no record holds: a shared pass lists only its clusters'
    nodes (none of its invocations lists every node), and the reconciler, which does, meters
    it into an orphan ledger each pass as it removes it."""
    from lsstctl.adapters.guard_shards import LambdaGuardShards
    from lsstctl.services import reconciler

    for name in ("left1", "left2", "left3"):
        ready(name, plane, budget_usd=100, idle_minutes=600)
    deps = wiring.deps()
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "parallelcluster:cluster-name", "Value": "nobody-0"}, {"Key": "lsstctl:owner", "Value": "eve"}]
    ec2.run_instances(
        ImageId=image,
        InstanceType="t3.medium",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    function = InProcessGuardFunction()
    monkeypatch.setattr(deps, "guard_shards", LambdaGuardShards("lsstctl-guard", client=function))
    monkeypatch.setattr(
        deps, "settings", deps.settings.model_copy(update={"guard_shard_size": 2, "guard_single_pass_clusters": 2})
    )
    summary = tick(plane)
    assert "unexplained" not in summary and summary["shares_sent"] == 1
    assert deps.store.get_ledger("nobody-0", 0) is None
    # The share an earlier version sent for them, arriving during a deploy: nothing to do
    late = costs.guard_tick(deps, shard={"at": ledgers.pass_stamp(plane()), "unexplained": True})
    assert late["clusters"] == 0 and not late.get("errors") and deps.store.get_ledger("nobody-0", 0) is None
    plane.advance(600)
    found = reconciler.reconcile(deps)
    assert [f["cluster"] for f in found["findings"] if f["kind"] == "orphan"] == ["nobody-0"]
    orphan = deps.store.get_ledger("nobody-0", 0)
    assert orphan["state"] == "orphan" and orphan["owner"] == "eve" and orphan["burn_usd_per_hour"] > 0
    assert orphan["spend_usd"] > 0 and orphan["measured_at"] == plane().isoformat()


def _calls_of_a_pass(plane) -> Counter:
    from lsstctl.emulator.faults import FaultInjector, recording

    seen: list = []
    with FaultInjector(plan=recording(seen)):
        summary = tick(plane)
    assert not summary.get("errors") and not summary["teardowns"], summary
    return Counter(c.operation for c in seen)


def test_a_pass_reads_its_records_and_ledgers_by_the_page_not_by_the_cluster(plane):
    """Up to a thousand clusters one invocation reads every record and live ledger in one
    paged read of the billing index: a pass over nine clusters makes the very calls a pass
    over three makes (no read by id, one query)."""
    for i in range(3):
        ready(f"paged{i}", plane, budget_usd=100, idle_minutes=600)
    tick(plane)  # their first measurements
    few = _calls_of_a_pass(plane)
    for i in range(3, 9):
        ready(f"paged{i}", plane, budget_usd=100, idle_minutes=600)
    tick(plane)
    many = _calls_of_a_pass(plane)
    assert many == few
    assert many["Query"] == 1 and "BatchGetItem" not in many and "PutItem" in many  # the pass's stamp
    deps = wiring.deps()
    clusters_read, ledgers_read = deps.store.billing_clusters_and_ledgers()
    assert [c.id for c in clusters_read] == sorted(cid(f"paged{i}") for i in range(9))
    assert set(ledgers_read) == {(cid(f"paged{i}"), 1) for i in range(9)}
    assert all(ledgers.current(deps, cid(f"paged{i}"), 1)["measured_at"] == plane().isoformat() for i in range(9))
    # More than the pass takes alone: the read says so (the pass is then shared)
    assert deps.store.billing_clusters_and_ledgers(most=8) is None


def test_a_ledger_is_on_the_billing_index_while_its_cluster_is_live_and_no_longer(plane):
    """A ledger measured while its cluster is live is read with the records; its teardown's
    measurement takes it off; one left there by a generation no longer live is taken off by
    the next pass, and one kept before ledgers were on the index is read by key once, then
    written back onto it."""
    ready("kept", plane, budget_usd=100, idle_minutes=600)
    ready("leaving", plane, budget_usd=100, idle_minutes=600)
    tick(plane)
    deps = wiring.deps()
    assert set(deps.store.billing_clusters_and_ledgers()[1]) == {(cid("kept"), 1), (cid("leaving"), 1)}
    # Torn down: its ledger is written at every measurement, now off the index
    clusters.request_teardown(deps, cid("leaving"), reason="user")
    tick(plane)
    assert set(deps.store.billing_clusters_and_ledgers()[1]) == {(cid("kept"), 1)}
    assert ledgers.current(deps, cid("leaving"), 1)["state"] == "tearing_down"
    # A ledger of a generation no record holds live, left on the index: taken off, kept
    ghost = {**ledgers.current(deps, cid("kept"), 1), "cluster_id": "ghost-0", "state": "ready"}
    deps.store.put_ledger("ghost-0", 1, "eve", ghost)
    assert ("ghost-0", 1) in deps.store.billing_clusters_and_ledgers()[1]
    tick(plane)
    assert ("ghost-0", 1) not in deps.store.billing_clusters_and_ledgers()[1]
    assert deps.store.get_ledger("ghost-0", 1)["state"] == "ready"
    # A ledger as kept before (not on the index): read by key once, then written onto it
    steady = _calls_of_a_pass(plane)["BatchGetItem"]  # the record being torn down, read by id
    table = boto3.resource("dynamodb").Table(deps.settings.state_table)
    key = {"pk": f"CLUSTER#{cid('kept')}", "sk": "COST#1"}
    item = table.get_item(Key=key)["Item"]
    table.put_item(Item={k: v for k, v in item.items() if k != "billing"})
    assert set(deps.store.billing_clusters_and_ledgers()[1]) == set()
    first_point = costs.cost_history(deps, ALICE, "kept")["points"][0]
    assert _calls_of_a_pass(plane)["BatchGetItem"] == steady + 1
    assert costs.cost_history(deps, ALICE, "kept")["points"][0] == first_point  # carried on, not begun again
    assert first_point["at"] < plane().isoformat()
    assert set(deps.store.billing_clusters_and_ledgers()[1]) == {(cid("kept"), 1)}
    assert _calls_of_a_pass(plane)["BatchGetItem"] == steady
