"""Every workflow step, killed at each of its AWS calls in turn (one fault at a time,
deterministic): the step is retried as the state machine's Retry would (anything but the
control plane's permanent errors), and the workflow still ends where it should — one
cluster, one Slurm job, nothing left billing, the outputs archived.

The steps run through their real Lambda handlers, against the emulator (moto's server,
real Slurm, real `aws s3 sync`); here the test drives them in the order the ASL does,
so that the k-th AWS call can be failed exactly once. The ASL itself under faults is
exercised in test_lifecycle_workflows.py (a teardown whose every step fails once)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import boto3
import pytest

from lsstctl import wiring
from lsstctl.domain.models import ClusterSpec, ClusterState, JobSpec, JobState
from lsstctl.emulator.faults import FaultInjector, call_positions, fail_at, fault_rounds, recording
from lsstctl.emulator.glue import LambdaContext, invocation
from lsstctl.errors import PERMANENT_STEP_ERRORS
from lsstctl.services import clusters, jobs
from lsstctl.services.identity import Principal
from tests.conftest import cluster_spec, live_instances

ALICE = Principal("alice")
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def driven(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """No execution starts while the test drives the steps itself (they would race it)."""
    from lsstctl.adapters.stepfunctions import StepFunctionsStarter

    monkeypatch.setattr(
        StepFunctionsStarter, "start", lambda self, machine, name, payload: self.execution_arn(machine, name)
    )
    yield emulator


def handler(name: str) -> Handler:
    import importlib

    return importlib.import_module(f"lambdas.{name}").lambda_handler


def step(fn: Handler, event: dict[str, Any]) -> dict[str, Any]:
    """One Task with the ASL's retry policy: permanent errors end it, the rest retry."""
    for _ in range(6):
        context = LambdaContext(function_name="test", invoked_function_arn="arn:test")
        try:
            with invocation(fn.__module__, event, context.aws_request_id):
                return fn(event, context)
        except Exception as error:
            if type(error).__name__ in PERMANENT_STEP_ERRORS:
                raise
    raise AssertionError(f"{event['action']} still failing after retries")


def until(fn: Handler, event: dict[str, Any], done: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        result = step(fn, event)
        if result[done]:
            return result
        assert time.monotonic() < deadline, f"{event['action']} never finished"
        event = {**event, **{k: v for k, v in result.items() if k in ("command_id", "deadline")}}
        time.sleep(0.05)


def run_launch(name: str, generation: int, poll: dict[str, int]) -> None:
    fn = handler("launch_steps")
    base = {"cluster": name, "generation": generation, "poll": poll, "request_id": "test"}
    started = step(fn, {**base, "action": "start"})
    until(fn, {**base, "action": "poll", "deadline": started["deadline"]}, "ready")
    install = step(fn, {**base, "action": "install"})
    until(
        fn,
        {**base, "action": "poll_install", "command_id": install["command_id"], "deadline": install["deadline"]},
        "done",
    )
    step(fn, {**base, "action": "ready"})


def claimed(name: str, poll: dict[str, int]) -> dict[str, Any]:
    """What the teardown workflow starts with (the claim's execution and reason)."""
    record = wiring.deps().store.get_cluster(name)
    return {
        "cluster": name,
        "generation": record.generation,
        "execution": record.teardown_execution,
        "poll": poll,
        "request_id": "test",
        "reason": record.teardown_reason,
    }


def run_teardown(base: dict[str, Any]) -> None:
    fn = handler("teardown_steps")
    claim = step(fn, {**base, "action": "begin"})
    assert claim["claimed"]
    step(fn, {**base, "action": "end_jobs"})
    step(fn, {**base, "action": "stop_fleet"})
    archive = step(fn, {**base, "action": "archive"})
    until(
        fn,
        {**base, "action": "poll_archive", "command_id": archive["command_id"], "deadline": archive["deadline"]},
        "done",
    )
    deleting = step(fn, {**base, "action": "delete"})
    until(fn, {**base, "action": "poll_delete", "deadline": deleting["deadline"]}, "gone")
    step(fn, {**base, "action": "finish"})


def run_job(name: str, job_id: str, ended: Callable[[], bool] = lambda: True) -> None:
    """Submit, then (once `ended` says Slurm is done with the job, so the first poll
    always meets the same finished job and makes the same calls) poll to the end."""
    fn = handler("job_steps")
    base = {"cluster": name, "job_id": job_id, "poll": {}, "request_id": "test"}
    submitted = step(fn, {**base, "action": "submit"})
    deadline = time.monotonic() + 60
    while not ended():
        assert time.monotonic() < deadline, f"Slurm never ended {job_id}"
        time.sleep(0.05)
    if not submitted["terminal"]:
        until(fn, {**base, "action": "poll", "deadline": submitted["deadline"]}, "terminal")


def new_cluster(prefix: str) -> tuple[str, int, dict[str, int]]:
    """Alice's new cluster: its id (what the steps, the records and AWS call it),
    generation and poll settings."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    deps = wiring.deps()
    # Every launch meets the stack cache as a new container does in an account that has one
    # (its first creation is tested in tests/integration/test_stack_cache.py), so that each
    # run makes the same calls to confirm it, and each is failed in turn.
    deps.stack_cache.ensure(deps.settings.cluster_subnet_id)
    deps.stack_cache.forget()
    cluster = clusters.launch_cluster(deps, ALICE, ClusterSpec.model_validate(cluster_spec(name)))
    return cluster.id, cluster.generation, clusters.poll_settings(deps)


def each_call_fails_once(
    prepare: Callable[[], Any], run: Callable[[Any], None], check: Callable[[Any], None]
) -> list[str]:
    """Every AWS call of every step (a clean run finds them) fails once: prepare (no
    faults), run, check. Round k fails the k-th call of each step — so each step is
    killed once per run, at a different call every round, and a fault is always dealt
    with before the next one comes. A position a run did not reach (a retried submit
    that finds its job already finished makes no poll) goes again in a later round, so
    every position fails exactly once. Returns `step: service.operation` of every fault."""
    calls: list[Any] = []
    failed = []
    # One injector for the whole matrix (its hooks live in the clients); a plan per run.
    with FaultInjector(plan=lambda call: False) as faults:
        prepared = prepare()
        faults.plan = recording(calls)
        run(prepared)
        check(prepared)
        positions = call_positions(calls)
        pending = list(positions)
        for _ in range(len(fault_rounds(positions)) + 3):
            if not pending:
                break
            round_ = fault_rounds(pending)[0]  # the first pending position of each step
            faults.plan = lambda call: False
            forget_terminated_instances()
            prepared = prepare()
            faults.log.clear()
            plan = fail_at(*round_)
            faults.plan = plan
            run(prepared)
            faults.plan = lambda call: False
            assert len(faults.log) == len(plan.fired), (round_, plan.fired, faults.log)
            check(prepared)
            failed += [f"{action}: {f.service}.{f.operation}" for (action, _), f in zip(plan.fired, faults.log)]
            pending = [p for p in pending if p not in plan.fired]
        assert not pending, f"never reached: {pending}"
    assert len(failed) == len(positions)
    return failed


def forget_terminated_instances() -> None:
    """EC2 forgets terminated instances after an hour; moto never does, and every
    DescribeInstances of a long matrix would pay for them."""
    from datetime import datetime, timedelta

    from lsstctl.emulator.glue import expire_terminated_instances

    expire_terminated_instances(datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2))


def assert_ready(name: str) -> None:
    record = wiring.deps().store.get_cluster(name)
    assert record.state == ClusterState.READY, (name, record.history)
    assert len(live_instances(name)) == 2  # one head node, MinCount=1 compute: none twice
    ec2 = boto3.client("ec2")
    volumes = ec2.describe_volumes(Filters=[{"Name": "tag:parallelcluster:cluster-name", "Values": [name]}])["Volumes"]
    assert len(volumes) == 1
    assert wiring.deps().monitor.list_idle_alarms().count(name) == 1


def made_ready(name: str) -> None:
    """What a launch leaves (the engine's cluster, ready, its idle alarm), made directly."""
    deps = wiring.deps()
    record = deps.store.get_cluster(name)
    engine = deps.engine.create_cluster(name, clusters.cluster_config(deps, record))
    for state in (ClusterState.LAUNCHING, ClusterState.INSTALLING):
        clusters.transition(deps, name, state, "test")
    deps.store.update_cluster(name, {"head_node_instance_id": deps.engine.describe_cluster(name).head_node_instance_id})
    deps.monitor.ensure_idle_alarm(name, record.spec.idle_minutes)
    clusters.transition(deps, name, ClusterState.READY, "test")
    assert engine.name == name


def discard(name: str) -> None:
    """Remove a checked cluster at once (a long matrix must not slow down moto's EC2)."""
    deps = wiring.deps()
    deps.engine.delete_cluster(name)
    deps.monitor.delete_idle_alarm(name)
    clusters.transition(deps, name, ClusterState.TEARING_DOWN, "test done")
    clusters.transition(deps, name, ClusterState.DELETED, "test done")


def test_a_launch_survives_a_fault_at_each_of_its_aws_calls(driven):
    def ready_once(prepared: tuple[str, int, dict[str, int]]) -> None:
        assert_ready(prepared[0])
        discard(prepared[0])

    failed = each_call_fails_once(lambda: new_cluster("lf"), lambda c: run_launch(*c), ready_once)
    assert {
        "start: ec2.RunInstances",
        "start: eventbridge.PutEvents",
        "install: ssm.SendCommand",
        "poll_install: ssm.GetCommandInvocation",
        "ready: cloudwatch.PutMetricAlarm",
        "ready: dynamodb.PutItem",
    } <= set(failed), failed


def test_a_teardown_survives_a_fault_at_each_of_its_aws_calls(driven):
    def launched_with_outputs() -> dict[str, Any]:
        name, generation, poll = new_cluster("tf")
        made_ready(name)
        out = Path(driven.workdir) / "nodes" / name / "shared" / "outputs" / "j-1"
        out.mkdir(parents=True)
        (out / "result.txt").write_text(name)
        clusters.request_teardown(wiring.deps(), name, reason="user")
        return claimed(name, poll)

    def deleted_and_archived(prepared: dict[str, Any]) -> None:
        name = prepared["cluster"]
        record = wiring.deps().store.get_cluster(name)
        assert record.state == ClusterState.DELETED and record.teardown["outcome"] == "deleted", record.history
        assert live_instances(name) == [] and name not in wiring.deps().monitor.list_idle_alarms()
        keys = [
            o["Key"]
            for o in boto3.client("s3")
            .list_objects_v2(Bucket="lsstctl-archive", Prefix=f"alice/{record.name}/")
            .get("Contents", [])
        ]
        assert f"alice/{record.name}/g1/j-1/result.txt" in keys  # the outputs were archived, not lost

    failed = each_call_fails_once(launched_with_outputs, run_teardown, deleted_and_archived)
    assert {
        "begin: cloudwatch.DeleteAlarms",
        "stop_fleet: ec2.TerminateInstances",
        "archive: ssm.SendCommand",
        "delete: cloudformation.DeleteStack",
        "finish: dynamodb.PutItem",
    } <= set(failed), failed


def test_a_job_survives_a_fault_at_each_of_its_aws_calls(driven):
    name, generation, poll = new_cluster("jf")
    run_launch(name, generation, poll)
    deps = wiring.deps()
    jobcomp = Path(driven.workdir) / "slurm" / "jobcomp.log"
    named = deps.store.get_cluster(name).name  # what alice calls it

    def submitted() -> str:
        return jobs.submit_job(wiring.deps(), ALICE, named, JobSpec(command="echo once >> ran.txt")).job_id

    def ran_once(job_id: str) -> None:
        job = wiring.deps().store.get_job(name, job_id)
        assert job.state == JobState.COMPLETED, job.history
        # One Slurm job for the record, which ran once
        out = Path(driven.workdir) / "nodes" / name / "shared" / "outputs" / job_id
        assert (out / "ran.txt").read_text() == "once\n"
        assert len(set(re.findall(rf"JobId=(\d+) [^\n]*{job_id}", jobcomp.read_text()))) == 1

    def ended(job_id: str) -> bool:
        return jobcomp.exists() and re.search(rf"JobId=\d+ [^\n]*{job_id}", jobcomp.read_text()) is not None

    failed = each_call_fails_once(submitted, lambda job_id: run_job(name, job_id, lambda: ended(job_id)), ran_once)
    assert {
        "submit: ssm.SendCommand",
        "submit: ssm.GetCommandInvocation",
        "submit: dynamodb.PutItem",
        "poll: ssm.GetCommandInvocation",
    } <= set(failed), failed
    clusters.request_teardown(deps, name, reason="user")
    run_teardown(claimed(name, poll))


@pytest.mark.parametrize("seed", [1, 2])
def test_a_teardown_under_a_sustained_outage_of_30_percent_of_requests_completes(
    driven: Any, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """30 % of every AWS request of the teardown steps fail (the SDK's retries apply: this is
    `sdk` mode), as the teardown function runs on AWS: its clients on the clean-up retry
    profile (no retry quota). The teardown ends; nothing of the cluster bills."""
    name, generation, poll = new_cluster("outage")
    made_ready(name)
    clusters.request_teardown(wiring.deps(), name, reason="user")
    with FaultInjector(mode="sdk", rate=0.3, seed=seed) as faults:
        run_teardown(claimed(name, poll))
    assert len(faults.log) / faults.calls > 0.1  # it was a bad day (30 % of requests, retries included)
    record = wiring.deps().store.get_cluster(name)
    assert record.state == ClusterState.DELETED and live_instances(name) == []
