"""run-job: Slurm jobs submitted through SSM on the head node, and tracked to the end."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from lsstctl.domain.cost import job_cost_usd
from lsstctl.domain.lifecycle import stopped_reason
from lsstctl.domain.models import Cluster, ClusterState, Job, JobSpec, JobState, Quanta, cluster_id, from_iso, iso
from lsstctl.domain.scripts import (
    LOG_TAIL_MAX_LINES,
    SlurmJob,
    job_output_dir,
    parse_job_status,
    render_cancel_command,
    render_job_status_command,
    render_log_tail_command,
    render_submit_command,
)
from lsstctl.errors import ConflictError, JobSubmitError, TransientError, ValidationError
from lsstctl.observability import metrics, request_id
from lsstctl.services import remote, stack_cache
from lsstctl.services.clusters import get_cluster, job_user, poll_settings, shared_dir
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_visible
from lsstctl.services.ledgers import current
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


def submit_job(
    deps: Deps,
    principal: Principal,
    cluster_name: str,
    spec: JobSpec,
    request_key: str | None = None,
    owner: str | None = None,
) -> Job:
    """Record the job, then start its workflow. Repeated with the same `request_key`
    (after any failure), it converges on one record and one execution."""
    cluster = get_cluster(deps, principal, cluster_name, owner)
    if cluster.state != ClusterState.READY:
        raise ConflictError(f"cluster '{cluster_name}' is {cluster.state.value}; jobs need a ready cluster")
    check_fits(deps, cluster, spec)
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


def check_fits(deps: Deps, cluster: Cluster, spec: JobSpec) -> None:
    """Refuse (400, naming the field) what the cluster can never run: an unknown queue, more
    nodes than the queue has, CPUs or memory beyond its largest instance type, a walltime
    past the cluster's lifetime. (Slurm would leave such a job pending for ever.)"""
    queues = {q.name: q for q in cluster.spec.queues}
    if spec.queue is not None and spec.queue not in queues:
        raise ValidationError(f"queue '{spec.queue}' is not one of {list(queues)}", field="queue")
    queue = queues[spec.queue] if spec.queue else cluster.spec.queues[0]  # ParallelCluster's default partition
    if spec.nodes > queue.max_nodes:
        raise ValidationError(
            f"nodes {spec.nodes} is more than queue '{queue.name}' has ({queue.max_nodes})", field="nodes"
        )
    sizes = deps.instance_sizes(queue.instance_types)
    if sizes:
        vcpus = max(v for v, _ in sizes.values())
        memory = max(m for _, m in sizes.values())
        per_node = -(-spec.ntasks // spec.nodes) * spec.cores
        if per_node > vcpus:
            raise ValidationError(
                f"{per_node} CPUs per node (tasks {spec.ntasks} over nodes {spec.nodes}, cores {spec.cores} each) is more "
                f"than queue '{queue.name}' has per node ({vcpus}, {', '.join(queue.instance_types)})",
                field="cores",
            )
        if spec.memory_mb is not None and spec.memory_mb > memory:
            raise ValidationError(
                f"memory_mb {spec.memory_mb} is more than a node of queue '{queue.name}' has "
                f"({memory} MiB, {', '.join(queue.instance_types)})",
                field="memory_mb",
            )
    ends = from_iso(cluster.created_at) + timedelta(hours=cluster.spec.max_lifetime_hours)
    left = (ends - deps.clock()).total_seconds() / 60
    if "walltime_minutes" in spec.model_fields_set and spec.walltime_minutes > left:  # (the default is no promise)
        raise ValidationError(
            f"walltime_minutes {spec.walltime_minutes} runs past the cluster's lifetime "
            f"({max(0, int(left))} minutes left, ends {iso(ends)})",
            field="walltime_minutes",
        )


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


def view_job(deps: Deps, principal: Principal, cluster_name: str, job_id: str, owner: str | None = None) -> Job:
    """get_job, with what it cost (while its cluster generation's record is there)."""
    job = get_job(deps, principal, cluster_name, job_id, owner)
    cluster = deps.store.find_cluster(job.cluster_id)
    if cluster is None or cluster.generation != job.generation:
        return job
    return with_costs(deps, cluster, [job])[0][0]


def list_jobs(deps: Deps, principal: Principal, cluster_name: str, owner: str | None = None) -> list[Job]:
    """Jobs of the cluster's current generation (not those of an earlier one of that name)."""
    return generation_jobs(deps, get_cluster(deps, principal, cluster_name, owner))


def generation_jobs(deps: Deps, cluster: Cluster) -> list[Job]:
    return [j for j in deps.store.list_jobs(cluster.id) if j.generation == cluster.generation]


def list_jobs_with_costs(
    deps: Deps, principal: Principal, cluster_name: str, owner: str | None = None
) -> dict[str, Any]:
    """GET /clusters/{name}/jobs: the jobs with their costs, and the cluster's spend split into
    what its jobs used and what was idle."""
    cluster = get_cluster(deps, principal, cluster_name, owner)
    priced, totals = with_costs(deps, cluster, generation_jobs(deps, cluster))
    return {"jobs": [j.model_dump(mode="json") for j in priced], "cost": totals}


def _node_hourly(
    deps: Deps, cluster: Cluster, queue_name: str | None, ledger: dict[str, Any]
) -> tuple[float, int | None]:
    """The price of one node of a queue as the ledger charges its compute nodes (spot or on
    demand), else the catalog's on-demand price; and its vCPUs."""
    queues = {q.name: q for q in cluster.spec.queues}
    queue = queues.get(queue_name or "") or cluster.spec.queues[0]
    charged = [
        r["hourly_usd"]
        for r in ledger.get("breakdown", [])
        if r.get("role") == "compute" and r.get("type") in queue.instance_types
    ]
    hourly = (
        sum(charged) / len(charged)
        if charged
        else deps.catalog.instance_hourly(cluster.spec.region or deps.settings.region, queue.instance_types[0])
    )
    vcpus = deps.instance_sizes(queue.instance_types).get(queue.instance_types[0], (None, None))[0]
    return hourly, vcpus


def with_costs(deps: Deps, cluster: Cluster, jobs: list[Job]) -> tuple[list[Job], dict[str, float]]:
    """Each job with its cost and share of the cluster generation's spend (its ledger, as the
    guard last measured it); and the totals: what jobs used, and what was idle (head node,
    storage and compute no job used): jobs_usd + idle_usd = spend_usd."""
    ledger = current(deps, cluster.id, cluster.generation) or {}
    spend = float(ledger.get("spend_usd") or 0.0)
    measured = from_iso(ledger["measured_at"]) if ledger.get("measured_at") else deps.clock()
    priced: list[Job] = []
    for job in jobs:
        if job.generation != cluster.generation or not job.node_count:
            # Not started (yet): nothing to charge; a job that ended so cost nothing.
            nothing = 0.0 if job.state.terminal else None
            priced.append(job.model_copy(update={"cost_usd": nothing, "spend_share_percent": nothing}))
            continue
        hourly, vcpus = _node_hourly(deps, cluster, job.partition or job.spec.queue, ledger)
        # Up to the ledger's measurement: the job's cost is a part of what was measured.
        end = min(from_iso(job.ended_at), measured) if job.ended_at else measured
        cost = job_cost_usd(
            started_at=from_iso(job.started_at) if job.started_at else None,
            ended_at=end,
            now=measured,
            node_count=job.node_count,
            cpus=job.cpus,
            node_hourly_usd=hourly,
            node_vcpus=vcpus,
        )
        priced.append(
            job.model_copy(
                update={
                    "cost_usd": round(cost, 8),
                    "spend_share_percent": round(100 * cost / spend, 2) if spend else 0.0,
                }
            )
        )
    jobs_usd = min(spend, sum(j.cost_usd or 0.0 for j in priced))
    return priced, {"spend_usd": spend, "jobs_usd": round(jobs_usd, 8), "idle_usd": round(spend - jobs_usd, 8)}


def job_archive_uri(deps: Deps, job: Job) -> str:
    """Where teardown archives the job's directory (its logs and outputs)."""
    return f"s3://{deps.settings.archive_bucket}/{job.owner}/{job.cluster}/g{job.generation}/{job.job_id}/"


def job_log(
    deps: Deps, principal: Principal, cluster_name: str, job_id: str, lines: int = 100, owner: str | None = None
) -> dict[str, Any]:
    """The last `lines` lines of a job's Slurm log, from the head node while its cluster has
    one (the job running or over); the archive's location of the whole log and outputs."""
    job = get_job(deps, principal, cluster_name, job_id, owner)
    if not 1 <= lines <= LOG_TAIL_MAX_LINES:
        raise ValidationError(f"tail must be 1 to {LOG_TAIL_MAX_LINES} lines", field="tail")
    if deps.job_steps is not None:
        return deps.job_steps.tail(job.cluster_id, job.job_id, lines)  # the API: through the job steps' function
    return tail_log(deps, job.cluster_id, job.job_id, lines)


def tail_log(deps: Deps, cid: str, job_id: str, lines: int) -> dict[str, Any]:
    """job_log's head-node side (the job steps' function's `log` action)."""
    job = deps.store.get_job(cid, job_id)
    lines = max(1, min(LOG_TAIL_MAX_LINES, lines))
    answer: dict[str, Any] = {
        "job_id": job.job_id,
        "state": job.state.value,
        "archive_uri": job_archive_uri(deps, job),
        "source": None,
        "lines": [],
    }
    cluster = deps.store.find_cluster(job.cluster_id)
    on_head_node = (
        cluster is not None
        and cluster.generation == job.generation
        and cluster.head_node_instance_id
        and cluster.state in {ClusterState.READY, ClusterState.TEARING_DOWN}
        and job.slurm_job_id
    )
    if not on_head_node:
        answer["detail"] = (
            "the job never reached Slurm"
            if not job.slurm_job_id
            else "its cluster is gone: the whole log is in the archive"
        )
        return answer
    assert cluster is not None and cluster.head_node_instance_id
    out = job_output_dir(shared_dir(deps, cluster), job.job_id)
    result = run_short(
        deps, cluster.head_node_instance_id, render_log_tail_command(out, lines), comment=f"log {job_id}"
    )
    if result.status != "Success":
        answer["detail"] = tail(result.stderr or result.stdout) or f"no log (exit {result.exit_code})"
        return answer
    return {**answer, "source": "head node", "lines": result.stdout.splitlines()[-lines:]}


# workflow steps (statemachines/run_job.asl.json) ---------------------------------------
def cancel_job(deps: Deps, principal: Principal, cluster_name: str, job_id: str, owner: str | None = None) -> Job:
    """End a job: `scancel` on the head node; the job's workflow then records it cancelled
    (Slurm's own word). A job already over is returned as it is; one not in Slurm yet is
    cancelled here, for good."""
    job = get_job(deps, principal, cluster_name, job_id, owner)
    if job.state.terminal:
        return job
    if not job.slurm_job_id:
        # Not in Slurm yet: cancelled here, final; a submission already under way sees it and
        # cancels what it submitted (submit_step).
        return _record(deps, job, JobState.CANCELLED, f"cancelled by {principal.name} before it reached Slurm")
    cluster = deps.store.get_cluster(job.cluster_id)
    if cluster.state != ClusterState.READY or not cluster.head_node_instance_id:
        raise ConflictError(f"cluster '{cluster_name}' is {cluster.state.value}")
    if deps.job_steps is not None:
        deps.job_steps.cancel(job.cluster_id, job.job_id)  # the API: through the job steps' function
    else:
        cancel_in_slurm(deps, job.cluster_id, job.job_id)
    return deps.store.get_job(job.cluster_id, job_id)


def cancel_in_slurm(deps: Deps, cid: str, job_id: str) -> dict[str, Any]:
    """scancel a job of the record's (and its pilots) on its cluster's head node."""
    job = deps.store.get_job(cid, job_id)
    cluster = deps.store.get_cluster(cid)
    if job.state.terminal or not job.slurm_job_id:
        return {"state": job.state.value}
    if not cluster.head_node_instance_id:
        raise ConflictError(f"cluster '{cluster.name}' is {cluster.state.value}")
    result = run_short(
        deps,
        cluster.head_node_instance_id,
        render_cancel_command(job.slurm_job_id, job.job_id),
        comment=f"scancel {job_id}",
    )
    if result.status != "Success":
        raise TransientError(f"scancel failed (exit {result.exit_code}): {tail(result.stderr or result.stdout)}")
    return {"state": job.state.value}


def _record(deps: Deps, job: Job, state: JobState, reason: str, **updates: Any) -> Job:
    changed = deps.store.update_job(
        job.cluster_id, job.job_id, state=state, reason=reason, updates={"reason": reason, **updates}
    )
    if changed.state != job.state:
        publish_job(deps, changed)
    return changed


def paced(deps: Deps, result: dict[str, Any], since: str | None) -> dict[str, Any]:
    """A submit or poll step's answer with the pace of the next poll (`remote.paced`): a job
    may run for hours, so its polls slow down further than a launch's."""
    return remote.paced(deps, result, since, most=deps.settings.job_poll_max_seconds)


def _tracking_deadline(deps: Deps, job: Job) -> str:
    return deadline_after(deps, job.spec.walltime_minutes * 60 + deps.settings.job_queue_timeout_seconds)


def submit_step(deps: Deps, cid: str, job_id: str) -> dict[str, Any]:
    job = deps.store.get_job(cid, job_id)
    if job.state.terminal:  # cancelled before it reached Slurm
        return {"state": job.state.value, "terminal": True, "deadline": None}
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
                run_as=job_user(deps, cluster),
                mount_dir=cluster.spec.shared_storage.mount_dir,
            ),
            comment=f"sbatch {job_id}",
        )
        lines = result.stdout.strip().splitlines()
        if result.status != "Success" or not lines or not re.fullmatch(r"\d+", lines[-1].strip()):
            raise JobSubmitError(f"sbatch failed (exit {result.exit_code}): {tail(result.stderr or result.stdout)}")
        slurm_job_id = lines[-1].strip()
        job = _record(
            deps,
            job,
            JobState.PENDING,
            "submitted to Slurm",
            slurm_job_id=slurm_job_id,
            output_dir=job_output_dir(cluster.spec.shared_storage.mount_dir, job_id),
        )
        if job.state.terminal:
            # Cancelled while sbatch ran: what was submitted goes too (scancel is idempotent).
            run_short(
                deps,
                cluster.head_node_instance_id,
                render_cancel_command(slurm_job_id, job_id),
                comment=f"scancel {job_id}",
            )
            return {"state": job.state.value, "terminal": True, "deadline": None}
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
    out = job_output_dir(shared_dir(deps, cluster), job.job_id)  # as the head node sees it
    result = run_short(
        deps,
        cluster.head_node_instance_id,
        render_job_status_command(job.slurm_job_id, out),
        comment=f"status {job_id}",
    )
    try:
        slurm = parse_job_status(result.stdout)
    except ValueError as error:
        raise TransientError(str(error)) from error
    if slurm is None:
        # Not (or no longer) known to Slurm: asked again until the tracking deadline.
        check_deadline(deps, deadline, f"Slurm job {job.slurm_job_id}")
        return {"state": job.state.value, "terminal": False, "deadline": deadline}
    job = _record(deps, job, JobState(slurm.state), slurm_reason(slurm), **slurm_updates(slurm))
    if job.state.terminal:
        metrics.add_metric(name=f"Jobs{job.state.value.capitalize()}", unit="Count", value=1)
    else:
        check_deadline(deps, deadline, f"Slurm job {job.slurm_job_id}")
    return {"state": job.state.value, "terminal": job.state.terminal, "deadline": deadline}


def slurm_reason(slurm: SlurmJob) -> str:
    why = f"Slurm {slurm.slurm_state}"
    if slurm.reason:
        why += f" ({slurm.reason})"
    if slurm.quanta:
        q = Quanta(**slurm.quanta)
        why += f"; quanta: {q.succeeded} succeeded, {q.failed} failed, {q.blocked} blocked, {q.remaining} remaining"
    return why


def slurm_updates(slurm: SlurmJob) -> dict[str, Any]:
    """The job record's fields from Slurm's record (only what Slurm said)."""

    def at(epoch: int | None) -> str | None:
        return iso(datetime.fromtimestamp(epoch, UTC)) if epoch else None

    updates: dict[str, Any] = {
        "exit_code": slurm.exit_code,
        "started_at": at(slurm.started_at),
        "ended_at": at(slurm.ended_at),
        "node_count": slurm.node_count,
        "cpus": slurm.cpus,
        "slurm_nodes": slurm.nodes,
        "partition": slurm.partition,
        "quanta": Quanta(**slurm.quanta) if slurm.quanta else None,
    }
    return {k: v for k, v in updates.items() if v is not None}


def job_failed(deps: Deps, cid: str, job_id: str, error: dict[str, Any] | None) -> dict[str, Any]:
    code, message = error_message(error)
    job = deps.store.get_job(cid, job_id)
    cluster = deps.store.get_cluster(cid)
    state = JobState.FAILED if cluster.state == ClusterState.READY else JobState.CANCELLED
    job = _record(deps, job, state, f"{code}: {message}")
    return {"state": job.state.value, "terminal": True}
