"""Steps of the teardown workflow (statemachines/teardown.asl.json).

Order matters for cost and for data: end the jobs gracefully (pending ones held, running
ones signalled and given `teardown_grace_seconds`, which every budget reserve includes),
stop compute (spend drops at once), archive outputs (those of the jobs that were running
included), and only then delete what holds data. An archive that fails leaves storage in
place and the cluster `failed`, with the reason, for the owner to act on.
"""

from __future__ import annotations

from typing import Any

from lsstctl.domain.lifecycle import CLAIMABLE_FOR_TEARDOWN, stopped_reason
from lsstctl.domain.models import ClusterState as S
from lsstctl.domain.models import JobState, from_iso, iso
from lsstctl.domain.scripts import render_archive_command, render_end_jobs_command
from lsstctl.errors import ArchiveFailedError, InvalidTransitionError, TeardownFailedError
from lsstctl.observability import logger, metrics
from lsstctl.services.clusters import TEARDOWN_COMPLETED, archive_prefix, shared_dir, transition
from lsstctl.services.costs import final_spend
from lsstctl.services.deps import Deps
from lsstctl.services.jobs import publish_job
from lsstctl.services.launch_workflow import load
from lsstctl.services.remote import (
    FAILED_STATUSES,
    check_deadline,
    converging,
    deadline_after,
    error_message,
    run_short,
    tail,
)


def begin_teardown(deps: Deps, cid: str, generation: int, execution: str, reason: str) -> dict[str, Any]:
    """Claim the cluster for this execution, exactly once. A second teardown (another
    trigger, a duplicate event) finds the claim taken and ends without doing anything."""
    load(deps, cid, generation)
    try:
        cluster = transition(
            deps,
            cid,
            S.TEARING_DOWN,
            reason,
            allowed_from=CLAIMABLE_FOR_TEARDOWN,
            updates={"teardown_execution": execution, "teardown_reason": reason},
            or_if={"teardown_execution": execution},
        )
    except InvalidTransitionError:
        logger.info("teardown not claimed: another execution owns it or it is done", extra={"cluster": cid})
        return {"claimed": False, "archive": False}
    # Idleness no longer matters once the cluster is going away.
    deps.monitor.delete_idle_alarm(cid)
    return {"claimed": True, "archive": cluster.head_node_instance_id is not None}


def end_jobs(deps: Deps, cid: str) -> dict[str, Any]:
    """The graceful end: hold the cluster's pending Slurm jobs and signal its running ones,
    then (the workflow's Wait) give them `teardown_grace_seconds` before compute stops. The
    record says which jobs were stopped. Teardown always wins: a head node that does not
    answer only costs the grace, never the teardown. Done once (a retried step finds it)."""
    cluster = deps.store.get_cluster(cid)
    if cluster.graceful_end is not None:
        return {"grace_seconds": cluster.graceful_end["grace_seconds"]}
    open_jobs = [
        j
        for j in deps.store.list_jobs(cid)
        if j.generation == cluster.generation and j.slurm_job_id and not j.state.terminal
    ]
    pending = [j for j in open_jobs if j.state == JobState.PENDING]
    running = [j for j in open_jobs if j.state != JobState.PENDING]
    ending: dict[str, Any] = {
        "at": iso(deps.clock()),
        "held": [j.job_id for j in pending],
        "signalled": [j.job_id for j in running],
        "grace_seconds": 0,
        "reached": False,
        "detail": "no pending or running job",
    }
    if open_jobs and cluster.head_node_instance_id:
        script = render_end_jobs_command(
            pending=[str(j.slurm_job_id) for j in pending], running=[str(j.slurm_job_id) for j in running]
        )
        try:
            result = run_short(deps, cluster.head_node_instance_id, script, comment=f"end the jobs of {cluster.name}")
            reached = result.status == "Success"
            detail = (
                "held and signalled" if reached else f"{result.status}: {tail(result.stderr or result.stdout, 200)}"
            )
        except Exception as error:  # the teardown goes on without a grace
            logger.warning("graceful end not reached", extra={"cluster": cid, "error": str(error)})
            reached, detail = False, f"the head node did not answer: {tail(str(error), 200)}"
        ending.update(
            reached=reached,
            detail=detail,
            grace_seconds=deps.settings.teardown_grace_seconds if reached and running else 0,
        )
    elif open_jobs:
        ending["detail"] = "no head node"
    deps.store.update_cluster(cid, {"graceful_end": ending})
    return {"grace_seconds": ending["grace_seconds"]}


def stop_fleet(deps: Deps, cid: str) -> dict[str, Any]:
    cluster = deps.store.get_cluster(cid)
    if cluster.teardown and cluster.teardown.get("outcome") == "failed":
        # A retry after a failed archive: the head node was stopped to save cost; the
        # archive needs it running again.
        converging(deps, lambda: deps.engine.start_head_node(cid))
    engine = converging(deps, lambda: deps.engine.stop_compute_fleet(cid))
    deps.store.update_cluster(cid, {"engine_status": engine.status, "compute_stopped_at": iso(deps.clock())})
    return {"fleet_status": engine.fleet_status}


def start_archive(deps: Deps, cid: str, poll: dict[str, Any]) -> dict[str, Any]:
    cluster = deps.store.get_cluster(cid)
    assert cluster.head_node_instance_id
    script = render_archive_command(
        shared_dir=shared_dir(deps, cluster),
        bucket=deps.settings.archive_bucket,
        prefix=archive_prefix(cluster),
    )
    command_id = deps.runner.send(
        cluster.head_node_instance_id,
        script,
        comment=f"archive outputs of {cluster.name}",
        timeout_seconds=poll["archive_timeout"],
    )
    return {"command_id": command_id, "done": False, "deadline": deadline_after(deps, poll["archive_timeout"])}


def poll_archive(deps: Deps, cid: str, command_id: str, deadline: str) -> dict[str, Any]:
    cluster = deps.store.get_cluster(cid)
    assert cluster.head_node_instance_id
    result = deps.runner.result(command_id, cluster.head_node_instance_id)
    if result.status == "Success":
        uri = f"s3://{deps.settings.archive_bucket}/{archive_prefix(cluster)}/"
        deps.store.update_cluster(cid, {"archive_uri": uri})
        return {"command_id": command_id, "done": True, "deadline": deadline}
    if result.status in FAILED_STATUSES:
        raise ArchiveFailedError(f"archive {result.status}: {tail(result.stderr or result.stdout)}")
    check_deadline(deps, deadline, "archive")
    return {"command_id": command_id, "done": False, "deadline": deadline}


def delete_cluster(deps: Deps, cid: str, poll: dict[str, Any]) -> dict[str, Any]:
    engine = converging(deps, lambda: deps.engine.delete_cluster(cid))
    deps.store.update_cluster(cid, {"engine_status": engine.status})
    return {"gone": False, "deadline": deadline_after(deps, poll["delete_timeout"])}


def poll_delete(deps: Deps, cid: str, deadline: str) -> dict[str, Any]:
    engine = converging(deps, lambda: deps.engine.describe_cluster(cid))
    if engine.status == "NOT_FOUND":
        return {"gone": True, "deadline": deadline}
    if engine.status == "DELETE_FAILED":
        raise TeardownFailedError(f"cluster deletion failed: {engine.reason or 'no reason given'}")
    check_deadline(deps, deadline, "cluster deletion")
    return {"gone": False, "deadline": deadline}


def _teardown_started(cluster: Any) -> str | None:
    starts = [t.at for t in cluster.history if t.state == S.TEARING_DOWN.value]
    return starts[-1] if starts else None


def _cancel_open_jobs(deps: Deps, cid: str, reason: str) -> None:
    cluster = deps.store.get_cluster(cid)
    for job in deps.store.list_jobs(cid):
        if not job.state.terminal:
            why = stopped_reason(cluster, job.job_id) or reason
            publish_job(deps, deps.store.update_job(cid, job.job_id, state=JobState.CANCELLED, reason=why))


def _summary(deps: Deps, cluster: Any, outcome: str, **extra: Any) -> dict[str, Any]:
    """The teardown's record: reason, outcome, start, end and the spend it ended at."""
    report = final_spend(deps, cluster)
    return {
        "outcome": outcome,
        "reason": cluster.teardown_reason,
        "started_at": _teardown_started(cluster),
        "compute_stopped_at": cluster.compute_stopped_at,
        "ended_at": iso(deps.clock()),
        "final_spend_usd": round(report.spend_usd, 6),
        "budget_usd": cluster.spec.budget_usd,
        # What still bills after the teardown (storage kept when the archive failed).
        "remaining_burn_usd_per_hour": round(report.burn_usd_per_hour, 6),
        # The jobs its graceful end held (pending) and signalled (running), and their grace.
        "stopped_jobs": {
            key: (cluster.graceful_end or {}).get(key, default)
            for key, default in (("held", []), ("signalled", []), ("grace_seconds", 0))
        },
        **extra,
    }


def _record_timing(deps: Deps, summary: dict[str, Any]) -> None:
    def seconds(at: str | None) -> float | None:
        if not at or not summary["started_at"]:
            return None
        return (from_iso(at) - from_iso(summary["started_at"])).total_seconds()

    total, stop = seconds(summary["ended_at"]), seconds(summary["compute_stopped_at"])
    if total is not None:
        # Without the grace it waited: every reserve adds the grace anyway (budget.teardown_timing).
        grace = summary["stopped_jobs"]["grace_seconds"]
        stop = stop if stop is not None else total
        deps.store.record_teardown_timing(max(0.0, stop - grace), max(0.0, total - grace))


def finish_teardown(deps: Deps, cid: str) -> dict[str, Any]:
    cluster = deps.store.get_cluster(cid)
    if cluster.state == S.TEARING_DOWN:
        # Measured before the transition: the cluster is gone, this is its final spend.
        summary = _summary(deps, cluster, "deleted", archive_uri=cluster.archive_uri)
        _record_timing(deps, summary)
        deps.store.update_cluster(cid, {"teardown": summary})
    cluster = transition(deps, cid, S.DELETED, "teardown complete", allowed_from=frozenset({S.TEARING_DOWN}), or_if={})
    _cancel_open_jobs(deps, cid, "cluster deleted")
    assert cluster.teardown is not None
    deps.events.publish(
        TEARDOWN_COMPLETED,
        {
            "cluster": cluster.name,
            "cluster_id": cid,
            "owner": cluster.owner,
            "generation": cluster.generation,
            **cluster.teardown,
        },
    )
    metrics.add_metric(name="TeardownsCompleted", unit="Count", value=1)
    return {"state": cluster.state.value, "final_spend_usd": cluster.teardown["final_spend_usd"]}


def teardown_failed(deps: Deps, cid: str, execution: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """Record why teardown stopped, but only for the execution that owns the claim: a stale
    or unclaimed execution failing must not mark someone else's teardown as failed."""
    code, message = error_message(error)
    current = deps.store.get_cluster(cid)
    if current.teardown_execution != execution:
        logger.warning("failed teardown did not own the claim", extra={"cluster": cid, "error": code})
        return {"state": current.state.value, "owned": False}
    if code == ArchiveFailedError.__name__:
        # Keep the data, stop paying for the head node: only storage bills from here on.
        deps.engine.stop_head_node(cid)
    summary = _summary(deps, current, "failed", error={"code": code, "message": message})
    cluster = transition(
        deps,
        cid,
        S.FAILED,
        f"teardown failed: {code}",
        allowed_from=frozenset({S.TEARING_DOWN}),
        updates={"failure": {"code": code, "message": message}, "teardown": summary},
        or_if={},
    )
    _cancel_open_jobs(deps, cid, "cluster teardown failed")
    detail = {
        "cluster": cluster.name,
        "cluster_id": cid,
        "owner": cluster.owner,
        "generation": cluster.generation,
        **summary,
    }
    deps.events.publish(TEARDOWN_COMPLETED, detail)
    # Data is kept (compute is stopped): the owner must decide, and knows what it costs.
    deps.notifier.notify(
        cluster.owner,
        f"{cluster.name}: teardown stopped ({code}); storage kept at ${summary['remaining_burn_usd_per_hour']:.4f}/h",
        detail,
    )
    metrics.add_metric(name="TeardownFailures", unit="Count", value=1)
    return {"state": cluster.state.value, "owned": True}
