"""The graceful end of a cluster's jobs at teardown (teardown_workflow.end_jobs): pending jobs
held, running ones signalled and given a grace before compute stops, the record saying
which; a head node that does not answer costs the grace, never the teardown."""

from __future__ import annotations

import json

import pytest

from lsstctl import wiring
from lsstctl.domain.models import Job, JobSpec, JobState, iso
from lsstctl.errors import NotFoundError
from lsstctl.services import clusters, jobs
from lsstctl.services import teardown_workflow as steps
from lsstctl.services.identity import Principal
from tests.integration.plane import cid, play_teardown, ready


class Shell:
    """The head node's shell as SSM reaches it: records what it was asked to run."""

    def __init__(self, runner, fail: Exception | None = None, slurm: dict[str, str] | None = None):
        self.runner, self.fail, self.scripts, self.slurm = runner, fail, [], slurm or {}

    def send(self, instance_id, script, *, comment, timeout_seconds=3600):
        if comment.startswith("end the jobs"):
            self.scripts.append(script)
            if self.fail is not None:
                raise self.fail
        if comment.startswith("status "):  # what Slurm says of a job (squeue --json)
            return f"status:{comment.split()[1]}"
        return self.runner.send(instance_id, script, comment=comment, timeout_seconds=timeout_seconds)

    def result(self, command_id, instance_id):
        from lsstctl.ports import CommandResult

        if command_id.startswith("status:"):
            state = self.slurm[command_id.split(":")[1]]
            record = {"job_id": 1, "job_state": state, "exit_code": 0, "state_reason": "None"}  # squeue --json's
            return CommandResult(command_id, "Success", 0, json.dumps({"source": "squeue", "jobs": [record]}), "")
        return self.runner.result(command_id, instance_id)

    def __getattr__(self, name):
        return getattr(self.runner, name)


def job(name: str, job_id: str, slurm_id: str | None, state: JobState) -> Job:
    now = iso(wiring.deps().clock())
    return wiring.deps().store.put_job(
        Job(
            job_id=job_id,
            cluster=name,
            owner="alice",
            spec=JobSpec(command="true"),
            state=state,
            slurm_job_id=slurm_id,
            created_at=now,
            updated_at=now,
        )
    )


def test_a_budget_teardown_holds_pending_jobs_signals_running_ones_and_records_them(plane, monkeypatch):
    ready("ending", plane, budget_usd=100)
    deps = wiring.deps()
    shell = Shell(deps.runner, slurm={"j-saves": "COMPLETED"})
    monkeypatch.setattr(deps, "runner", shell)
    job("ending", "j-run", "41", JobState.RUNNING)
    job("ending", "j-saves", "43", JobState.RUNNING)
    job("ending", "j-wait", "42", JobState.PENDING)
    job("ending", "j-done", "40", JobState.COMPLETED)
    clusters.request_teardown(deps, cid("ending"), reason="budget")
    record = deps.store.get_cluster(cid("ending"))
    steps.begin_teardown(deps, cid("ending"), record.generation, record.teardown_execution, "budget")
    first = steps.end_jobs(deps, cid("ending"))
    again = steps.end_jobs(deps, cid("ending"))  # a retried step: done once
    assert first == again == {"grace_seconds": deps.settings.teardown_grace_seconds}
    assert shell.scripts == ["scontrol hold 42 || true\nscancel --signal=TERM --full 41 43 || true\necho ended"]
    # In the grace (compute still up) the running jobs are still tracked: one saves its work
    # and ends within it, which Slurm reports and the record keeps.
    assert jobs.poll_step(deps, cid("ending"), "j-saves", None)["state"] == "completed"
    play_teardown("ending")
    done = deps.store.get_cluster(cid("ending"))
    assert done.teardown["stopped_jobs"] == {
        "held": ["j-wait"],
        "signalled": ["j-run", "j-saves"],
        "grace_seconds": deps.settings.teardown_grace_seconds,
    }
    reasons = {
        j.job_id: (j.state, j.history[-1].reason if j.history else None) for j in deps.store.list_jobs(cid("ending"))
    }
    assert reasons["j-run"] == (
        JobState.CANCELLED,
        f"stopped at the cluster's end (budget): signalled SIGTERM, {deps.settings.teardown_grace_seconds} s grace",
    )
    assert reasons["j-wait"] == (JobState.CANCELLED, "held at the cluster's end (budget): never started")
    assert reasons["j-done"][0] == reasons["j-saves"][0] == JobState.COMPLETED


@pytest.mark.parametrize("jobs_open", [False, True])
def test_no_grace_without_running_jobs_or_without_an_answer(plane, monkeypatch, jobs_open):
    ready("quick", plane, budget_usd=100)
    deps = wiring.deps()
    shell = Shell(deps.runner, fail=RuntimeError("InvalidInstanceId: not in a valid state"))
    monkeypatch.setattr(deps, "runner", shell)
    if jobs_open:
        job("quick", "j-run", "7", JobState.RUNNING)
    clusters.request_teardown(deps, cid("quick"), reason="lifetime")
    record = deps.store.get_cluster(cid("quick"))
    steps.begin_teardown(deps, cid("quick"), record.generation, record.teardown_execution, "lifetime")
    assert steps.end_jobs(deps, cid("quick")) == {"grace_seconds": 0}
    ending = deps.store.get_cluster(cid("quick")).graceful_end
    assert len(shell.scripts) == int(jobs_open)
    assert ending["reached"] is False and ending["signalled"] == (["j-run"] if jobs_open else [])
    assert ("did not answer" in ending["detail"]) if jobs_open else ending["detail"] == "no pending or running job"
    assert play_teardown("quick").state.value == "deleted"  # the teardown goes on


def test_the_api_cancels_and_reads_logs_through_the_job_steps_function_when_deployed(plane, monkeypatch):
    # On AWS the API has no shell on head nodes: with the function configured, cancelling a job
    # in Slurm and reading its log go through it (data only), the ownership checked first here.
    ready("apicalls", plane)
    deps = wiring.deps()

    class Steps:
        def __init__(self):
            self.calls = []

        def cancel(self, cid_, job_id):
            self.calls.append(("cancel", cid_, job_id))

        def tail(self, cid_, job_id, lines):
            self.calls.append(("log", cid_, job_id, lines))
            return {"job_id": job_id, "lines": ["x"]}

    steps_function = Steps()
    monkeypatch.setattr(deps, "job_steps", steps_function)
    job("apicalls", "j-in-slurm", "7", JobState.RUNNING)
    alice = Principal("alice")
    assert jobs.cancel_job(deps, alice, "apicalls", "j-in-slurm").state == JobState.RUNNING  # ended at the next poll
    assert jobs.job_log(deps, alice, "apicalls", "j-in-slurm", 20) == {"job_id": "j-in-slurm", "lines": ["x"]}
    assert steps_function.calls == [
        ("cancel", cid("apicalls"), "j-in-slurm"),
        ("log", cid("apicalls"), "j-in-slurm", 20),
    ]
    with pytest.raises(NotFoundError):  # another owner's job: refused before any call
        jobs.cancel_job(deps, Principal("bob"), "apicalls", "j-in-slurm", owner="alice")
    assert len(steps_function.calls) == 2
