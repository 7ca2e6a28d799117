"""The reconciler while AWS fails (issue: teardown always wins). A pass with one kind of AWS
call failing every time still handles every item that does not need that call; reads that
fail for a while are retried inside the pass; a DELETE whose StartExecution keeps failing is
torn down by the pass after it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lsstctl import wiring
from lsstctl.domain.models import ClusterState
from lsstctl.emulator.faults import Call, FaultInjector, recording
from lsstctl.services import clusters, reconciler
from lsstctl.services import teardown_workflow as steps
from tests.integration.plane import billing, cid, play_teardown, ready

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pass backs off between read attempts; a test does not wait for real seconds.
    monkeypatch.setenv("LSSTCTL_RECONCILE_READ_BACKOFF_SECONDS", "0.001")
    # Every round leaves its clusters (their workflows do not run here): room for them all.
    for quota, value in (
        ("LIVE_CLUSTERS", "1000"),
        ("TOTAL_NODES", "100000"),
        ("TOTAL_BUDGET_USD", "1000000"),
        ("MONTHLY_BUDGET_USD", "1000000"),
    ):
        monkeypatch.setenv(f"LSSTCTL_QUOTA_{quota}", value)


def kinds(summary: dict[str, Any]) -> set[str]:
    return {f["kind"] for f in summary["findings"]}


def failed_teardown(name: str, plane: Any) -> None:
    """A cluster whose teardown stopped (its retry is due): the reconciler retries it."""
    deps = wiring.deps()
    record = deps.store.find_cluster(cid(name)) or ready(name, plane, budget_usd=100)
    if record.state == ClusterState.READY:
        record = clusters.request_teardown(deps, cid(name), reason="idle")
    if record.state == ClusterState.TEARING_DOWN:
        steps.begin_teardown(deps, cid(name), record.generation, record.teardown_execution, "idle")
        steps.teardown_failed(
            deps,
            cid(name),
            record.teardown_execution,
            {"Error": "AwsUnavailableError", "Cause": '{"errorMessage": "throttled"}'},
        )


def without_alarm(name: str, plane: Any) -> None:
    """A ready cluster whose idle alarm is missing: the reconciler recreates it."""
    if wiring.deps().store.find_cluster(cid(name)) is None:
        ready(name, plane, budget_usd=100)
    wiring.deps().monitor.delete_idle_alarm(cid(name))


def orphan(name: str, plane: Any) -> None:
    """Resources under a name no record holds: the reconciler deletes them."""
    from lsstctl.domain.models import ClusterSpec
    from lsstctl.domain.pcluster_config import render_cluster_config
    from tests.conftest import cluster_spec

    deps = wiring.deps()
    if deps.engine.describe_cluster(name).status != "NOT_FOUND":
        return
    spec = ClusterSpec.model_validate({**cluster_spec(name), "owner": "mallory"})
    deps.engine.create_cluster(
        name,
        render_cluster_config(
            spec,
            owner="mallory",
            subnet_id=deps.settings.cluster_subnet_id,
            key_name=deps.settings.cluster_key_name,
            archive_bucket="b",
            archive_prefix="p",
            metrics_policy_arn=deps.settings.head_node_metrics_policy_arn,
            cluster_id=name,
        ),
    )


# Each item of a pass, how to (re)make it, and what the pass does about it.
WORLD: dict[str, tuple[Callable[[str, Any], None], str]] = {
    "flaky": (failed_teardown, "failed_teardown_retried"),
    "noalarm": (without_alarm, "alarm_missing"),
    "nobody": (orphan, "orphan"),
}


# The pass's reads each item depends on: a failed teardown only on the records; a missing
# alarm on the records and the alarms; an orphan on all that tells what exists.
RECORDS = {"dynamodb.Query"}
READS_NEEDED = {
    "flaky": RECORDS,
    "noalarm": RECORDS | {"cloudwatch.DescribeAlarms"},
    "nobody": RECORDS | {"ec2.DescribeInstances", "ec2.DescribeVolumes", "cloudformation.DescribeStacks"},
}


def pass_with(plan: Callable[[Call], bool] | None) -> tuple[dict[str, Any], int]:
    """A reconciler pass under this fault plan: its summary and how many calls failed."""
    with FaultInjector(mode="outlast", plan=plan) as injector:
        return reconciler.reconcile(wiring.deps()), len(injector.log)


def arm(plane: Any, suffix: str, round_: int = 0) -> None:
    """(Re)make every item (a new orphan each round); then wait out the retry backoff."""
    for item, (make, _) in WORLD.items():
        make(name_of(item, suffix, round_, bare=True), plane)
    plane.advance(7 * 3600)


def name_of(item: str, suffix: str, round_: int = 0, bare: bool = False) -> str:
    if item == "nobody":
        return f"{item}-{suffix}{round_}"
    return f"{item}-{suffix}" if bare else cid(f"{item}-{suffix}")


def handled(summary: dict[str, Any], suffix: str, round_: int = 0) -> set[str]:
    done = {(f["kind"], f["cluster"]) for f in summary["findings"]}
    return {item for item, (_, kind) in WORLD.items() if (kind, name_of(item, suffix, round_)) in done}


def test_a_pass_with_any_one_kind_of_call_failing_handles_every_item_that_does_not_need_it(plane: Any) -> None:
    # What each item's handling calls: learnt from a pass with it alone, less what a pass
    # with nothing to do calls (its reads), plus the reads the item really depends on.
    def operations(calls: list[Call]) -> set[str]:
        return {f"{c.service}.{c.operation}" for c in calls}

    base: list[Call] = []
    pass_with(recording(base))
    needs: dict[str, set[str]] = {}
    for item in WORLD:
        WORLD[item][0](name_of(item, "alone", bare=True), plane)
        plane.advance(7 * 3600)
        calls: list[Call] = []
        assert handled(pass_with(recording(calls))[0], "alone") == {item}
        needs[item] = (operations(calls) - operations(base)) | READS_NEEDED[item]
    assert READS_NEEDED["nobody"] <= operations(base)
    every = sorted(set().union(*needs.values()))
    assert len(every) >= 12  # the reads, the claims, the starts, the alarms, the deletes
    # Then, with all of them at once, each kind of call failing every time in turn.
    for round_, operation in enumerate(every, start=1):
        arm(plane, "all", round_)
        summary, failed = pass_with(lambda call, op=operation: f"{call.service}.{call.operation}" == op)
        expected = {item for item in WORLD if operation not in needs[item]}
        assert handled(summary, "all", round_) >= expected, f"{operation} failing: {summary['findings']}"
        # What it could not do is said, never silently dropped.
        assert (
            not failed
            or summary["unread"]
            or summary["unaudited"]  # the audit trail refused: its entries went to the log
            or any(f["kind"] == "error" for f in summary["findings"])
        ), operation
    # And with AWS back, the next pass handles all of them.
    arm(plane, "all", 0)
    assert handled(pass_with(None)[0], "all", 0) == set(WORLD)


def test_reads_failing_for_a_while_are_retried_inside_the_pass(plane: Any) -> None:
    arm(plane, "r")
    failures: dict[str, int] = {}

    def first_two_of_each_read(call: Call) -> bool:
        if call.operation not in {
            "DescribeInstances",
            "DescribeVolumes",
            "DescribeAlarms",
            "Query",
            "DescribeStacks",
            "ListStacks",
        }:
            return False
        failures[call.operation] = failures.get(call.operation, 0) + 1
        return failures[call.operation] <= 2

    summary, _ = pass_with(first_two_of_each_read)
    assert summary["unread"] == [] and kinds(summary) >= {"failed_teardown_retried", "alarm_missing", "orphan"}
    assert all(n > 2 for n in failures.values()) and len(failures) >= 3


def test_a_delete_whose_workflow_cannot_start_is_torn_down_by_the_next_pass(plane: Any) -> None:
    from lsstctl.errors import AwsUnavailableError

    ready("stuck", plane, budget_usd=100)
    deps = wiring.deps()
    with FaultInjector(mode="outlast", plan=lambda call: call.operation == "StartExecution"):
        with pytest.raises(AwsUnavailableError):  # the DELETE answers 503 (the route maps it)
            try:
                clusters.request_teardown(wiring.deps(), cid("stuck"), reason="user")
            except Exception as error:
                from lsstctl.adapters.aws import classify

                raise classify(error) or error  # noqa: B904 (re-raised as the route would map it)
    record = deps.store.get_cluster(cid("stuck"))
    assert record.state == ClusterState.TEARING_DOWN and record.teardown_started_at is None  # GET shows it
    plane.advance(deps.settings.reconcile_start_grace_seconds + 1)
    summary = reconciler.reconcile(wiring.deps())
    assert "teardown_started" in kinds(summary)
    assert play_teardown("stuck").state == ClusterState.DELETED and billing("stuck") == []
