"""run-job: Slurm jobs submitted through SSM on the head node, and tracked to the end."""
from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from lsstctl.domain.lifecycle import stopped_reason
from lsstctl.domain.models import ClusterState, Job, JobSpec, JobState, cluster_id, iso
from lsstctl.domain.scripts import (
    OS_DEFAULT_USER,
    job_output_dir,
    parse_job_status,
    render_cancel_command,
    render_job_status_command,
    render_submit_command,
)
from lsstctl.errors import ConflictError, JobSubmitError, TransientError, ValidationError
from lsstctl.observability import metrics, request_id
from lsstctl.services.clusters import get_cluster, poll_settings, shared_dir
from lsstctl.services import stack_cache
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_visible
from lsstctl.services.remote import check_deadline, deadline_after, error_message, run_short, tail

JOB_STATE_CHANGED = "Job State Changed"


def publish_job(deps: Deps, job: Job) -> None:
    deps.events.publish(
        JOB_STATE_CHANGED,
        {
            "cluster": job.cluster,
            "cluster_id": job.cluster_id,
            "job_id": job.job_id,
            "owner": job.owner,
            "state": job.state.value,
            "finished": job.state.terminal,
            "slurm_job_id": job.slurm_job_id,
            "exit_code": job.exit_code,
            "reason": job.reason,
            "at": job.updated_at,
        },
    )


def new_job_id(deps: Deps, request_key: str | None = None) -> str:
    """A fresh id, or — for a request the client may repeat (its Idempotency-Key) — the
    same id every time, so that a retry after a failure finds the job it created."""
    if request_key:
        return f"j-k{hashlib.sha256(request_key.encode()).hexdigest()[:16]}"
    return f"j-{deps.clock().strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"


def submit_job(deps: Deps, principal: Principal, cluster_name: str, spec: JobSpec,
               request_key: str | None = None, owner: str | None = None) -> Job:
    """Record the job, then start its workflow. Repeated with the same `request_key`
    (after any failure), it converges on one record and one execution."""
    cluster = get_cluster(deps, principal, cluster_name, owner)
    if cluster.state != ClusterState.READY:
        raise ConflictError(f"cluster '{cluster_name}' is {cluster.state.value}; jobs need a ready cluster")
    queues = [q.name for q in cluster.spec.queues]
    if spec.queue is not None and spec.queue not in queues:
        raise ValidationError(f"queue '{spec.queue}' is not one of {queues}", field="queue")
    now = iso(deps.clock())
    key = f"{principal.name}#{cluster.id}#g{cluster.generation}#{request_key}" if request_key else None
    job = Job(
        job_id=new_job_id(deps, key),
        cluster=cluster_name,
        generation=cluster.generation,
        owner=cluster.owner,
        spec=spec,
        created_at=now,
        updated_at=now,
    )
    name = job_execution_name(job)
    job = job.model_copy(update={"execution": deps.workflows.execution_arn(deps.settings.job_state_machine_arn, name)})
    try:
        deps.store.put_job(job)
    except ConflictError:
        existing = deps.store.get_job(cluster.id, job.job_id)
        if existing.spec != spec or existing.generation != cluster.generation:
            raise
        job = existing  # the retry of a request whose first attempt recorded the job
    if job.state == JobState.SUBMITTING:
        publish_job(deps, job)  # consumers dedupe on (job, state)
        start_job_workflow(deps, job)
    metrics.add_metric(name="JobsSubmitted", unit="Count", value=1)
    return job


def job_execution_name(job: Job) -> str:
    return f"job-{job.cluster_id}-{job.job_id}"


def start_job_workflow(deps: Deps, job: Job) -> None:
    """Start (or find, by its deterministic name) the job's execution."""
    deps.workflows.start(
        deps.settings.job_state_machine_arn,
        job_execution_name(job),
        {"cluster": job.cluster_id, "job_id": job.job_id, "poll": poll_settings(deps), "request_id": request_id()},
    )


def get_job(deps: Deps, principal: Principal, cluster_name: str, job_id: str, owner: str | None = None) -> Job:
    """A job of one of the caller's clusters (of any generation: its id is unique)."""
    owner = owner or principal.name
    ensure_visible(principal, owner, f"job '{job_id}'")
    return deps.store.get_job(cluster_id(owner, cluster_name), job_id)


def list_jobs(deps: Deps, principal: Principal, cluster_name: str, owner: str | None = None) -> list[Job]:
    """Jobs of the cluster's current generation (not those of an earlier one of that name)."""
    cluster = get_cluster(deps, principal, cluster_name, owner)
    return [j for j in deps.store.list_jobs(cluster.id) if j.generation == cluster.generation]


# workflow steps (statemachines/run_job.asl.json) ---------------------------------------
def cancel_job(deps: Deps, principal: Principal, cluster_name: str, job_id: str, owner: str | None = None) -> Job:
    """End a job: `scancel` on the head node; the job's workflow then records it cancelled
    (Slurm's own word). A job already over is returned as it is; one still being handed to
    Slurm has no Slurm id yet: TransientError (the chatops workflow retries it)."""
    job = get_job(deps, principal, cluster_name, job_id, owner)
    if job.state.terminal:
        return job
    if not job.slurm_job_id:
        # Being handed to Slurm right now: a moment later it has an id (the caller retries).
        raise TransientError(f"job '{job_id}' is still being submitted to Slurm")
    cluster = deps.store.get_cluster(job.cluster_id)
    if cluster.state != ClusterState.READY or not cluster.head_node_instance_id:
        raise ConflictError(f"cluster '{cluster_name}' is {cluster.state.value}")
    result = run_short(deps, cluster.head_node_instance_id, render_cancel_command(job.slurm_job_id),
                       comment=f"scancel {job_id}")
    if result.status != "Success":
        raise TransientError(f"scancel failed (exit {result.exit_code}): {tail(result.stderr or result.stdout)}")
    return deps.store.get_job(job.cluster_id, job_id)


def _record(deps: Deps, job: Job, state: JobState, reason: str, **updates: Any) -> Job:
    changed = deps.store.update_job(job.cluster_id, job.job_id, state=state, reason=reason, updates=updates)
    if changed.state != job.state:
        publish_job(deps, changed)
    return changed


def _tracking_deadline(deps: Deps, job: Job) -> str:
    return deadline_after(deps, job.spec.walltime_minutes * 60 + deps.settings.job_queue_timeout_seconds)


def submit_step(deps: Deps, cid: str, job_id: str) -> dict[str, Any]:
    job = deps.store.get_job(cid, job_id)
    if job.slurm_job_id is None:
        cluster = deps.store.get_cluster(cid)
        if cluster.state != ClusterState.READY or not cluster.head_node_instance_id:
            raise JobSubmitError(f"cluster '{cluster.name}' is {cluster.state.value}")
        shared = shared_dir(deps, cluster)
        result = run_short(
            deps,
            cluster.head_node_instance_id,
            render_submit_command(
                job.spec,
                job_id=job_id,
                shared_dir=shared,
                tag=cluster.spec.stack_tag,
                stack_root=stack_cache.stack_root(deps, cluster, shared),
                run_as=deps.settings.job_user or OS_DEFAULT_USER[cluster.spec.os],
            ),
            comment=f"sbatch {job_id}",
        )
        lines = result.stdout.strip().splitlines()
        if result.status != "Success" or not lines or not re.fullmatch(r"\d+", lines[-1].strip()):
            raise JobSubmitError(f"sbatch failed (exit {result.exit_code}): {tail(result.stderr or result.stdout)}")
        job = _record(
            deps, job, JobState.PENDING, "submitted to Slurm",
            slurm_job_id=lines[-1].strip(), output_dir=job_output_dir(cluster.spec.shared_storage.mount_dir, job_id),
        )
    return {"state": job.state.value, "terminal": job.state.terminal, "deadline": _tracking_deadline(deps, job)}


def poll_step(deps: Deps, cid: str, job_id: str, deadline: str | None) -> dict[str, Any]:
    job = deps.store.get_job(cid, job_id)
    if job.state.terminal:
        return {"state": job.state.value, "terminal": True, "deadline": deadline}
    cluster = deps.store.get_cluster(cid)
    # In its cluster's graceful end (tearing down, compute still up) a job may still finish:
    # Slurm is asked on until compute stops.
    in_grace = cluster.state == ClusterState.TEARING_DOWN and not cluster.compute_stopped_at
    if (cluster.state != ClusterState.READY and not in_grace) or not cluster.head_node_instance_id:
        why = stopped_reason(cluster, job.job_id) or f"cluster is {cluster.state.value}"
        job = _record(deps, job, JobState.CANCELLED, why)
        return {"state": job.state.value, "terminal": True, "deadline": deadline}
    assert job.slurm_job_id
    result = run_short(deps, cluster.head_node_instance_id, render_job_status_command(job.slurm_job_id),
                       comment=f"status {job_id}")
    try:
        state, exit_code, slurm_state = parse_job_status(result.stdout)
    except ValueError as error:
        raise TransientError(str(error)) from error
    job = _record(deps, job, JobState(state), f"Slurm {slurm_state}", exit_code=exit_code)
    if job.state.terminal:
        metrics.add_metric(name=f"Jobs{job.state.value.capitalize()}", unit="Count", value=1)
    else:
        check_deadline(deps, deadline, f"Slurm job {job.slurm_job_id}")
    return {"state": job.state.value, "terminal": job.state.terminal, "deadline": deadline}


def job_failed(deps: Deps, cid: str, job_id: str, error: dict[str, Any] | None) -> dict[str, Any]:
    code, message = error_message(error)
    job = deps.store.get_job(cid, job_id)
    cluster = deps.store.get_cluster(cid)
    state = JobState.FAILED if cluster.state == ClusterState.READY else JobState.CANCELLED
    job = _record(deps, job, state, f"{code}: {message}")
    return {"state": job.state.value, "terminal": True}
