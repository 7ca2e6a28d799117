"""The real ASL, executed by moto's interpreter, calling our real handlers; SSM commands
run on this machine and jobs run in a real Slurm. Time is compressed through the input
(1 s polls), never slept through."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest

from lsstctl import wiring
from lsstctl.adapters.local_engine import fleet_table_name
from lsstctl.domain.models import ClusterSpec, ClusterState, JobSpec
from lsstctl.errors import ClusterConfigError, NotFoundError
from lsstctl.services import clusters, jobs, stack_cache
from lsstctl.services.identity import Principal
from tests.conftest import cid, cluster_spec, drain_events, live_instances, states_entered, wait_execution

ALICE = Principal("alice")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def launch(name: str, **overrides) -> object:
    return clusters.launch_cluster(wiring.deps(), ALICE, ClusterSpec.model_validate(cluster_spec(name, **overrides)))


def launched_ready(name: str):
    cluster = launch(name)
    execution = wait_execution(cluster.launch_execution)
    assert execution["status"] == "SUCCEEDED", execution
    return wiring.deps().store.get_cluster(cluster.id)


def torn_down(name: str):
    cluster = clusters.delete_cluster(wiring.deps(), ALICE, name)
    assert wait_execution(cluster.teardown_execution)["status"] == "SUCCEEDED"
    return wiring.deps().store.get_cluster(cluster.id)


def test_a_cluster_with_a_cached_tag_skips_its_install_and_jobs_use_the_cached_stack(emulator):
    # Given a cluster that installed (or found) w_2026_47 in the stack cache
    first = launched_ready(unique("cache1"))
    # When a second cluster with the same tag is launched
    second = launched_ready(unique("cache2"))
    # Then its install was a hit, and a job there sets up the cached stack
    assert second.stack_cache_id == first.stack_cache_id
    assert second.install_log["cached"] is True and "already installed" in second.install_log["tail"][-1]
    job = jobs.submit_job(wiring.deps(), ALICE, second.name, JobSpec(command='echo "$LSST_DISTRIB_DIR"'))
    assert wait_execution(job.execution)["status"] == "SUCCEEDED"
    out = Path(emulator.workdir) / "nodes" / second.id / "shared" / "outputs" / job.job_id
    logged = "".join(p.read_text() for p in out.glob("slurm-*.out"))
    assert str(Path(emulator.workdir) / "stack-cache" / "lsst_stack" / "w_2026_47") in logged
    report = stack_cache.report(wiring.deps())
    # (the stand-in installs in about a second, so the minutes saved here are near zero; the
    # arithmetic is tested in tests/integration/test_stack_cache.py)
    tag = next(t for t in report["tags"] if t["tag"] == "w_2026_47")
    assert tag["hits"] >= 1 and tag["installs"] >= 1 and report["file_system_id"] == second.stack_cache_id, (
        report,
        first.install_log,
    )
    for cluster in (first, second):
        assert torn_down(cluster.name).state == ClusterState.DELETED


def test_happy_path_launch_run_teardown(emulator):
    name = unique("happy")
    drain_events(emulator.settings_env["LSSTCTL_AUDIT_QUEUE_URL"])

    # Given a launched cluster
    ready = launched_ready(name)
    assert [t.state for t in ready.history] == ["requested", "launching", "installing", "ready"]
    assert len(live_instances(ready.id)) == 2  # head node + MinCount=1 compute
    # (in the stack cache, which every emulated head node mounts)
    stack = Path(emulator.workdir) / "stack-cache" / "lsst_stack" / "w_2026_47"
    assert (stack / "stack" / "w_2026_47" / "lsst_distrib.installed").exists()
    assert ready.stack_cache_id
    # And the install's log is in the archive, its last lines on the record
    # (a retried install step sends the script again: the second run finds the tag and skips)
    assert ready.install_log["status"] == "Success", ready.install_log
    assert re.search(r"lsst_distrib w_2026_47 (already )?installed in ", ready.install_log["tail"][-1]), (
        ready.install_log
    )
    log_key = ready.install_log["uri"].removeprefix("s3://lsstctl-archive/")
    assert log_key == f"alice/{name}/g1/install/w_2026_47.log"
    logged = boto3.client("s3").get_object(Bucket="lsstctl-archive", Key=log_key)["Body"].read().decode()
    # (the stand-in's install, or the stack cache's hit when an earlier cluster installed the tag)
    assert "stand-in" in logged or "w_2026_47 already installed" in logged

    # When a job runs on it
    job = jobs.submit_job(wiring.deps(), ALICE, name, JobSpec(command="echo result > answer.txt; hostname"))
    assert wait_execution(job.execution)["status"] == "SUCCEEDED"
    finished = wiring.deps().store.get_job(ready.id, job.job_id)
    assert finished.state.value == "completed" and finished.exit_code == "0:0" and finished.slurm_job_id
    # Slurm may finish a one-line job between two polls, so `running` can be skipped.
    states = [t.state for t in finished.history]
    assert states[0] == "pending" and states[-1] == "completed" and set(states) <= {"pending", "running", "completed"}

    # Then teardown archives the outputs and leaves nothing behind
    gone = torn_down(name)
    assert gone.state == ClusterState.DELETED and gone.teardown_reason == "user"
    assert live_instances(ready.id) == []
    assert fleet_table_name(ready.id) not in boto3.client("dynamodb").list_tables()["TableNames"]
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="lsstctl-archive", Prefix=f"alice/{name}/")["Contents"]
    ]
    assert f"alice/{name}/g1/{job.job_id}/answer.txt" in keys

    # And every transition was published for subscribers
    events = drain_events(emulator.settings_env["LSSTCTL_AUDIT_QUEUE_URL"])
    mine = [e for e in events if e["detail"].get("cluster") == name]
    states = [e["detail"]["state"] for e in mine if e["detail-type"] == "Cluster State Changed"]
    assert states[0] == "requested" and "ready" in states and states[-1] == "deleted"
    assert any(e["detail-type"] == "Job State Changed" and e["detail"]["finished"] for e in mine)
    done = [e["detail"] for e in mine if e["detail-type"] == "Teardown Completed"]
    assert len(done) == 1 and done[0]["reason"] == "user" and done[0]["outcome"] == "deleted"


@pytest.fixture
def setting(monkeypatch):
    """Set one of the control plane's settings for a test (every in-process function sees it)."""

    def set_(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        wiring.reset()

    yield set_
    monkeypatch.undo()
    wiring.reset()


def test_failing_install_ends_in_clean_teardown(emulator, setting):
    setting("LSSTCTL_LSST_INSTALLER_URL", "file:///nonexistent/lsstinstall")
    name = unique("badinstall")
    # (a tag no other test installs: the stack cache would otherwise have it)
    cluster = launch(name, stack_tag="d_2026_01_02")
    assert wait_execution(cluster.launch_execution)["status"] == "FAILED"
    record = wiring.deps().store.get_cluster(cluster.id)
    assert wait_execution(record.teardown_execution)["status"] == "SUCCEEDED"
    record = wiring.deps().store.get_cluster(cluster.id)
    assert record.state == ClusterState.DELETED
    assert record.teardown_reason == "launch_failed"
    assert record.failure["code"] == "InstallFailedError" and "lsstinstall" in record.failure["message"]
    assert [t.state for t in record.history] == ["requested", "launching", "installing", "tearing_down", "deleted"]
    assert live_instances(cluster.id) == []


def test_duplicate_launch_requests_create_one_cluster(emulator):
    name = unique("dup")
    results, errors = [], []
    barrier = threading.Barrier(4)

    def request() -> None:
        barrier.wait()
        try:
            results.append(launch(name))
        except Exception as error:  # a racing duplicate may see the conflict
            errors.append(error)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results and all(r.generation == 1 for r in results) and not errors
    assert wait_execution(results[0].launch_execution)["status"] == "SUCCEEDED"
    sfn = boto3.client("stepfunctions")
    machine = results[0].launch_execution.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
    launches = [e for e in sfn.list_executions(stateMachineArn=machine)["executions"] if f"-{cid(name)}-" in e["name"]]
    assert len(launches) == 1
    assert len(live_instances(cid(name))) == 2
    # A different spec under the same name is a conflict, not a second cluster.
    with pytest.raises(Exception, match="already exists"):
        launch(name, budget_usd=99)
    torn_down(name)


def test_teardown_started_twice_runs_once(emulator):
    name = unique("twice")
    ready = launched_ready(name)
    deps = wiring.deps()
    sfn = boto3.client("stepfunctions")
    # A stale execution (for another generation of the name) fails without touching the cluster.
    stale = sfn.start_execution(
        stateMachineArn=deps.settings.teardown_state_machine_arn,
        name=f"stale-{ready.id}",
        input=json.dumps({"cluster": ready.id, "generation": 99, "reason": "idle", "poll": {"seconds": 1}}),
    )["executionArn"]
    assert wait_execution(stale)["status"] == "FAILED"
    assert deps.store.get_cluster(ready.id).state == ClusterState.READY
    # Given two triggers at once (say the user and a failed launch) and a direct second execution
    first = clusters.delete_cluster(deps, ALICE, name)
    second = clusters.request_teardown(deps, ready.id, reason="lifetime")
    assert first.teardown_execution == second.teardown_execution
    rogue = sfn.start_execution(
        stateMachineArn=deps.settings.teardown_state_machine_arn,
        name=f"rogue-{ready.id}",
        input=json.dumps(
            {"cluster": ready.id, "generation": ready.generation, "reason": "idle", "poll": {"seconds": 1}}
        ),
    )["executionArn"]
    # Then exactly one execution did the work
    assert wait_execution(first.teardown_execution)["status"] == "SUCCEEDED"
    assert wait_execution(rogue)["status"] == "SUCCEEDED"
    assert "StopComputeFleet" in states_entered(first.teardown_execution)
    assert states_entered(rogue) == ["ClaimCluster", "Claimed?", "AlreadyHandled"]
    record = deps.store.get_cluster(ready.id)
    assert record.state == ClusterState.DELETED and record.teardown_reason == "user"
    assert [t.state for t in record.history].count("tearing_down") == 1
    # And asking again after the end changes nothing
    assert clusters.delete_cluster(deps, ALICE, name).state == ClusterState.DELETED


@pytest.mark.parametrize(
    "queue, message",
    [
        (
            {"name": "q", "instance_types": ["c5.large"], "min_nodes": 5, "max_nodes": 2},
            "Max count must be greater than or equal to min count.",
        ),
        ({"name": "q", "instance_types": ["c5.nonexistent"]}, "do not exist"),
        ({"name": "Bad_Queue", "instance_types": ["c5.large"]}, "Invalid name 'Bad_Queue'"),
    ],
)
def test_bad_specs_are_rejected_before_anything_exists(emulator, queue, message):
    name = unique("bad")
    with pytest.raises(ClusterConfigError) as exc:
        launch(name, queues=[queue])
    assert message in exc.value.message
    with pytest.raises(NotFoundError):
        wiring.deps().store.get_cluster(cid(name))
    assert live_instances(cid(name)) == []


def test_failed_and_cancelled_jobs_are_recorded(emulator):
    name = unique("jobs")
    ready = launched_ready(name)
    deps = wiring.deps()
    failing = jobs.submit_job(deps, ALICE, name, JobSpec(command="echo about to fail; exit 3"))
    assert wait_execution(failing.execution)["status"] == "SUCCEEDED"
    record = deps.store.get_job(ready.id, failing.job_id)
    assert record.state.value == "failed" and record.exit_code == "3:0"

    long_running = jobs.submit_job(deps, ALICE, name, JobSpec(command="sleep 300"))
    torn_down(name)
    wait_execution(long_running.execution)
    record = deps.store.get_job(ready.id, long_running.job_id)
    assert record.state.value == "cancelled"


def test_a_job_running_at_teardown_is_signalled_saves_its_work_and_it_is_archived(emulator):
    """The graceful end through the real teardown ASL and a real Slurm: the running job gets
    SIGTERM and its grace, writes what it has, and the archive keeps it; the record says so."""
    name = unique("grace")
    ready = launched_ready(name)
    deps = wiring.deps()
    job = jobs.submit_job(
        deps,
        ALICE,
        name,
        JobSpec(
            command="trap 'echo partial > saved.txt; exit 0' TERM; echo started > started.txt; "
            "for i in $(seq 1200); do sleep 0.1; done"
        ),
    )
    deadline = time.monotonic() + 60
    while deps.store.get_job(ready.id, job.job_id).state.value != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert deps.store.get_job(ready.id, job.job_id).state.value == "running"
    gone = torn_down(name)
    entered = states_entered(gone.teardown_execution)
    assert entered.index("EndJobs") < entered.index("GracePeriod") < entered.index("StopComputeFleet")
    assert gone.teardown["stopped_jobs"]["signalled"] == [job.job_id]
    assert gone.graceful_end["reached"] and gone.graceful_end["grace_seconds"] > 0
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="lsstctl-archive", Prefix=f"alice/{name}/")["Contents"]
    ]
    assert f"alice/{name}/g1/{job.job_id}/saved.txt" in keys  # what it wrote in its grace
    wait_execution(job.execution)
    record = deps.store.get_job(ready.id, job.job_id)
    # It exited 0 in its grace: Slurm says completed (if the tracker saw it), else the end says why.
    if record.state.value == "completed":  # Slurm reported its clean exit on TERM
        assert record.exit_code == "0:0"
    else:
        assert record.state.value == "cancelled" and "signalled SIGTERM" in record.history[-1].reason


@pytest.mark.parametrize("in_place", [1, 3], ids=["workflow-retry", "retried-in-step"])
def test_a_teardown_whose_every_step_fails_once_still_ends_clean(emulator, setting, in_place):
    """The real ASL under faults: the first AWS call of every teardown step fails once,
    beyond the SDK's retries, and the outputs still reach S3. With one attempt per
    invocation (`step_attempts=1`) each Task's Retry carries the fault; by default the step
    re-runs itself in place and the workflow never sees a failed invocation."""
    setting("LSSTCTL_STEP_ATTEMPTS", str(in_place))
    from lsstctl.emulator.faults import FaultInjector, fail_first_call_of_each_step

    name = unique("faulty")
    ready = launched_ready(name)
    out = Path(emulator.workdir) / "nodes" / ready.id / "shared" / "outputs" / "j-1"
    out.mkdir(parents=True)
    (out / "kept.txt").write_text("data")
    with FaultInjector(plan=fail_first_call_of_each_step()) as faults:
        record = clusters.delete_cluster(wiring.deps(), ALICE, name)
        execution = wait_execution(record.teardown_execution, timeout=120)
    assert execution["status"] == "SUCCEEDED", execution
    # begin, end_jobs, stop_fleet, archive, poll_archive, delete, poll_delete, finish: each failed once
    assert len(faults.log) == 8, faults.log
    gone = wiring.deps().store.get_cluster(ready.id)
    assert gone.state == ClusterState.DELETED and gone.teardown["outcome"] == "deleted"
    assert live_instances(ready.id) == []
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="lsstctl-archive", Prefix=f"alice/{name}/")["Contents"]
    ]
    assert f"alice/{name}/g1/j-1/kept.txt" in keys
    history = boto3.client("stepfunctions").get_execution_history(
        executionArn=record.teardown_execution, maxResults=1000
    )["events"]
    retried = [e for e in history if e["type"] == "LambdaFunctionFailed"]
    # With one attempt, every fault failed an attempt that the Task's Retry ran again, but for
    # the two steps whose first call is the engine's (delete, poll_delete): a step retries those
    # converging calls itself (services.remote.converging), so they never fail the step.
    assert len(retried) == (len(faults.log) - 2 if in_place == 1 else 0)
