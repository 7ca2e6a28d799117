"""The reconciler on moto, with a clock we control: every way the records and AWS can
disagree, and what a pass does about it (then, that a second pass does nothing more)."""

from __future__ import annotations

import boto3
import pytest

from lsstctl import wiring
from lsstctl.domain.models import ClusterState, JobSpec, JobState
from lsstctl.ports import ExecutionStatus
from lsstctl.services import clusters, jobs, reconciler
from lsstctl.services import teardown_workflow as steps
from tests.integration.plane import ALICE, billing, cid, launched, play_teardown, ready, tick

GRACE_PLUS = 11 * 60  # past the reconciler's grace for fresh records (10 minutes)


def kinds(summary: dict) -> list[str]:
    return [f["kind"] for f in summary["findings"]]


def execution_status(arn: str) -> str:
    return boto3.client("stepfunctions").describe_execution(executionArn=arn)["status"]


def test_a_teardown_whose_execution_died_is_redriven_until_nothing_bills(plane):
    # Given a teardown whose execution ended without finishing (aborted, say)
    ready("stuck", plane, budget_usd=100)
    first = clusters.request_teardown(wiring.deps(), cid("stuck"), reason="user")
    boto3.client("stepfunctions").stop_execution(executionArn=first.teardown_execution)
    # When the reconciler passes
    summary = reconciler.reconcile(wiring.deps())
    # Then it claims a new attempt and starts it (the record says why), and deletes the
    # idle alarm the dead execution did not get to
    assert kinds(summary) == ["teardown_redriven", "stray_alarm"]
    record = wiring.deps().store.get_cluster(cid("stuck"))
    assert record.state == ClusterState.TEARING_DOWN and record.teardown_reason == "user"
    assert record.teardown_execution != first.teardown_execution
    assert record.teardown_execution.endswith("-a2") and execution_status(record.teardown_execution) == "RUNNING"
    assert "reconciler: teardown execution aborted" in [t.reason for t in record.history]
    # And that attempt ends the cluster: nothing bills, and the next pass finds nothing
    assert kinds(reconciler.reconcile(wiring.deps())) == []  # it runs: left alone
    assert play_teardown("stuck").state == ClusterState.DELETED and billing("stuck") == []
    assert kinds(reconciler.reconcile(wiring.deps())) == []


def test_a_claimed_teardown_whose_execution_never_started_is_started_by_the_next_pass(plane):
    # Given a claim whose request could not start the execution (its StartExecution failed)
    ready("claimed", plane, budget_usd=100)
    deps = wiring.deps()
    claimed = deps.workflows.execution_arn(deps.settings.teardown_state_machine_arn, f"teardown-{cid('claimed')}-g1-a1")
    clusters.transition(
        deps,
        cid("claimed"),
        ClusterState.TEARING_DOWN,
        "user",
        updates={"teardown_execution": claimed, "teardown_reason": "user"},
    )
    deps.monitor.delete_idle_alarm(cid("claimed"))
    assert deps.store.get_cluster(cid("claimed")).teardown_started_at is None  # what GET shows
    # Then the reconciler leaves it while the request may still be at it (a minute)...
    assert kinds(reconciler.reconcile(deps)) == []
    # ...and the next pass starts the claimed execution: no ten-minute wait, no second claim
    plane.advance(deps.settings.reconcile_start_grace_seconds + 1)
    assert kinds(reconciler.reconcile(deps)) == ["teardown_started"]
    record = deps.store.get_cluster(cid("claimed"))
    assert record.teardown_execution == claimed and record.teardown_started_at is not None
    assert kinds(reconciler.reconcile(deps)) == []  # running now: nothing more to do
    assert play_teardown("claimed").state == ClusterState.DELETED


def test_a_failed_teardown_is_retried_with_backoff_while_it_may_bill(plane):
    ready("flaky", plane, budget_usd=100)
    record = clusters.request_teardown(wiring.deps(), cid("flaky"), reason="idle")
    deps = wiring.deps()
    steps.begin_teardown(deps, cid("flaky"), record.generation, record.teardown_execution, "idle")
    steps.teardown_failed(
        deps,
        cid("flaky"),
        record.teardown_execution,
        {"Error": "AwsUnavailableError", "Cause": '{"errorMessage": "throttled"}'},
    )
    assert deps.store.get_cluster(cid("flaky")).state == ClusterState.FAILED and billing("flaky")
    # Not at once: a first retry five minutes after the failure, then twice as long each time
    plane.advance(4 * 60)
    assert kinds(reconciler.reconcile(deps)) == []
    plane.advance(2 * 60)
    summary = reconciler.reconcile(deps)
    assert kinds(summary) == ["failed_teardown_retried"] and summary["findings"][0]["still_billing"]
    second = deps.store.get_cluster(cid("flaky"))
    assert second.state == ClusterState.TEARING_DOWN and second.teardown_execution.endswith("-a2")
    steps.teardown_failed(deps, cid("flaky"), second.teardown_execution, {"Error": "AwsUnavailableError", "Cause": ""})
    plane.advance(6 * 60)
    assert kinds(reconciler.reconcile(deps)) == []  # the second wait is ten minutes
    plane.advance(5 * 60)
    assert kinds(reconciler.reconcile(deps)) == ["failed_teardown_retried"]
    assert play_teardown("flaky").state == ClusterState.DELETED and billing("flaky") == []


def test_an_interrupted_launch_resumes_and_a_failed_one_ends_in_teardown(plane, monkeypatch):
    # Given two launches whose executions ended before the cluster was ready
    deps = wiring.deps()
    interrupted = launched("paused")
    failed = launched("broken")
    sfn = boto3.client("stepfunctions")
    sfn.stop_execution(executionArn=interrupted.launch_execution)  # the emulator restarting, say
    real = deps.workflows.describe

    def describe(arn: str):
        found = real(arn)
        if arn == failed.launch_execution:  # its LaunchFailed step itself failed
            return ExecutionStatus("FAILED", found.started_at, found.started_at)
        return found

    monkeypatch.setattr(deps.workflows, "describe", describe)
    plane.advance(60)
    # When the reconciler passes
    summary = reconciler.reconcile(deps)
    # Then the interrupted one carries on in a new execution, the failed one is torn down
    assert sorted(kinds(summary)) == ["launch_resumed", "launch_stalled"]
    resumed = deps.store.get_cluster(cid("paused"))
    assert resumed.state == ClusterState.REQUESTED and resumed.launch_execution.endswith("-g1-r1")
    assert execution_status(resumed.launch_execution) == "RUNNING"
    ended = deps.store.get_cluster(cid("broken"))
    assert ended.state == ClusterState.TEARING_DOWN and ended.teardown_reason == "launch_stalled"
    assert ended.failure["code"] == "LaunchStalled"
    assert kinds(reconciler.reconcile(deps)) == []


def test_a_launch_past_its_deadlines_is_stopped_and_torn_down(plane):
    deps = wiring.deps()
    slow = launched("slow")
    plane.advance(deps.settings.launch_timeout_seconds + deps.settings.install_timeout_seconds + 16 * 60)
    summary = reconciler.reconcile(deps)
    assert kinds(summary) == ["launch_stalled"] and summary["findings"][0]["why"] == "launch ran past its deadlines"
    assert execution_status(slow.launch_execution) == "ABORTED"
    assert deps.store.get_cluster(cid("slow")).state == ClusterState.TEARING_DOWN


def test_a_request_whose_workflow_never_started_is_withdrawn(plane):
    # Given a record whose request failed between writing it and starting its workflow
    from lsstctl.domain.models import Cluster, ClusterSpec, Transition, iso
    from tests.conftest import cluster_spec

    deps = wiring.deps()
    now = iso(plane())
    deps.store.create_cluster(
        Cluster(
            name="ghost",
            owner="alice",
            spec=ClusterSpec.model_validate({**cluster_spec("ghost"), "owner": "alice"}),
            created_at=now,
            updated_at=now,
            history=[Transition(state="requested", at=now, reason="test")],
            launch_execution=deps.workflows.execution_arn(
                deps.settings.launch_state_machine_arn, f"launch-{cid('ghost')}-g1"
            ),
        )
    )
    assert kinds(reconciler.reconcile(deps)) == []  # the request may still be starting it
    plane.advance(GRACE_PLUS)
    assert kinds(reconciler.reconcile(deps)) == ["launch_never_started"]
    assert deps.store.get_cluster(cid("ghost")).state == ClusterState.DELETED


def test_what_no_live_record_explains_is_metered_then_deleted(plane):
    # Given resources under a name no record holds, and leftovers of a deleted cluster
    deps = wiring.deps()
    from lsstctl.domain.models import ClusterSpec
    from lsstctl.domain.pcluster_config import render_cluster_config
    from tests.conftest import cluster_spec

    spec = ClusterSpec.model_validate({**cluster_spec("nobody"), "owner": "mallory"})
    config = render_cluster_config(
        spec,
        owner="mallory",
        subnet_id=deps.settings.cluster_subnet_id,
        key_name=deps.settings.cluster_key_name,
        archive_bucket="b",
        archive_prefix="p",
        metrics_policy_arn=deps.settings.head_node_metrics_policy_arn,
        cluster_id="nobody",
    )
    deps.engine.create_cluster("nobody", config)
    ready("gone", plane, budget_usd=100)
    play_teardown(clusters.request_teardown(deps, cid("gone"), reason="user").name)
    deps.engine.create_cluster(cid("gone"), config)  # a node ParallelCluster launched after deletion, say
    # When the guard ticks, it still counts what they cost
    summary = tick(plane)
    assert set(summary["unexplained"]) == {"nobody", cid("gone")} and all(summary["unexplained"].values())
    orphan_ledger = deps.store.get_ledger("nobody", 0)
    assert orphan_ledger["owner"] == "mallory" and orphan_ledger["state"] == "orphan"
    # And the reconciler deletes them, saying what they cost per hour
    found = reconciler.reconcile(deps)
    orphans = {f["cluster"]: f for f in found["findings"] if f["kind"] == "orphan"}
    assert set(orphans) == {"nobody", cid("gone")}
    assert orphans["nobody"]["record"] is None and orphans[cid("gone")]["record"] == "deleted g1"
    assert all(f["usd_per_hour"] > 0 and f["resources"] for f in orphans.values())
    assert billing("nobody", owner=None) == [] and billing("gone") == []
    assert deps.engine.list_clusters() == []
    plane.advance(60)
    assert kinds(reconciler.reconcile(deps)) == []
    # The pass is recorded, newest first
    assert deps.store.reconciliations()[1]["findings"] == found["findings"]


def test_idle_alarms_follow_the_records(plane):
    deps = wiring.deps()
    ready("watched", plane, budget_usd=100)
    deps.monitor.delete_idle_alarm(cid("watched"))  # lost
    deps.monitor.ensure_idle_alarm("stray", 30)  # of no cluster
    summary = reconciler.reconcile(deps)
    assert sorted(kinds(summary)) == ["alarm_missing", "stray_alarm"]
    assert deps.monitor.list_idle_alarms() == [cid("watched")]


def test_jobs_whose_workflow_never_started_are_cancelled_and_interrupted_ones_resume(plane):
    deps = wiring.deps()
    ready("busy", plane, budget_usd=100)
    started = jobs.submit_job(deps, ALICE, "busy", JobSpec(command="true"), request_key="k-1")
    with pytest.MonkeyPatch.context() as patch:  # its own: undoing it leaves the fixture's
        patch.setattr(deps.workflows, "start", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("throttled")))
        with pytest.raises(RuntimeError):
            jobs.submit_job(deps, ALICE, "busy", JobSpec(command="false"), request_key="k-2")
    boto3.client("stepfunctions").stop_execution(executionArn=started.execution)
    plane.advance(GRACE_PLUS)
    summary = reconciler.reconcile(deps)
    assert sorted(kinds(summary)) == ["job_never_started", "job_tracking_resumed"]
    states = {j.spec.command: j for j in deps.store.list_jobs(cid("busy"))}
    assert states["false"].state == JobState.CANCELLED and "did not complete" in states["false"].reason
    assert states["true"].state == JobState.SUBMITTING and states["true"].execution != started.execution
    assert execution_status(states["true"].execution) == "RUNNING"


def test_a_user_whose_request_failed_after_iam_is_adopted(plane):
    deps = wiring.deps()
    s = deps.settings
    deps.users.ensure_user(
        name="lsst-carol",
        owner="carol",
        policy_name="p",
        policy={
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}],
        },
        secret_name=f"{s.secret_prefix}carol",
        tags={"lsstctl:owner": "carol"},
    )
    assert deps.store.get_user("carol") is None
    summary = reconciler.reconcile(deps)
    assert kinds(summary) == ["user_adopted"]
    user = deps.store.get_user("carol")
    assert user.iam_user_name == "lsst-carol" and user.secret_arn.split(":")[-1].startswith("lsstctl/users/carol")
    assert kinds(reconciler.reconcile(deps)) == []
