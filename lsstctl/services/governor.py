"""The scale governor at work (the rule: lsstctl.domain.governor). Each guard pass, for a
ready cluster the budget does not end yet: pick the node caps its remaining budget can
carry, and when they change, apply them on the head node through the control plane's own
SSM document (`NODE_CAP_SCRIPT`: drain the nodes above a cap, resume them when it rises).

The record (`Cluster.governor`) is written before the command is sent (not applied yet:
the reserve assumes the larger of the new and the last applied caps) and again once the
head node says it applied them, so a lost answer never makes the guard assume a smaller
fleet than the one that may run. A launch whose budget carries only part of its fleet
starts capped (lsstctl.services.budget.check_budget_is_enough) and applies its caps before
it is ready, so no job can start a node above them. The owner is told when the cluster
becomes capped and when the cap lifts, with the runway left (a launch that starts capped is
told in its response).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lsstctl.domain.cost import SpendReport, TeardownTiming
from lsstctl.domain.governor import Governance, govern, reach_hourly
from lsstctl.domain.models import Cluster, iso
from lsstctl.domain.scripts import node_cap_applied, render_caps
from lsstctl.errors import TransientError
from lsstctl.observability import metrics
from lsstctl.services import audit
from lsstctl.services.budget import effective_caps, governor_record, queue_reach
from lsstctl.services.clusters import node_root
from lsstctl.services.deps import Deps
from lsstctl.services.remote import tail, wait_short

CLUSTER_CAPPED = "Cluster Capped"


def queues_of(observed: list[Any]) -> dict[str, str]:
    """Each observed compute node's queue (its ParallelCluster tag)."""
    return {o.id: o.queue for o in observed if o.kind == "instance" and o.role == "compute"}


def running_by_queue(report: SpendReport, queue_of: Mapping[str, str]) -> dict[str, float]:
    """What each queue's billing compute nodes burn now (from the measurement)."""
    running: dict[str, float] = {}
    for item in report.breakdown:
        if item["role"] == "compute" and item["billing"]:
            queue = queue_of.get(item["id"], "")
            running[queue] = running.get(queue, 0.0) + float(item["hourly_usd"])
    return running


def steer(
    deps: Deps, cluster: Cluster, report: SpendReport, running: Mapping[str, float], timing: TeardownTiming
) -> Governance:
    """The caps the remaining budget carries now (nothing applied here)."""
    queues = queue_reach(deps, cluster, running)
    return govern(
        budget_usd=cluster.spec.budget_usd,
        spend_usd=report.spend_usd,
        base_usd_per_hour=report.base_burn_usd_per_hour,
        queues=queues,
        caps_now=effective_caps(deps, cluster),
        guard_interval_seconds=deps.settings.guard_interval_seconds,
        timing=timing,
    )


def caps_of(deps: Deps, cluster: Cluster) -> Governance:
    """The caps the record holds (those a launch chose), as a Governance to apply."""
    queues = queue_reach(deps, cluster)
    held = (cluster.governor or {}).get("caps") or {}
    caps = {q.name: min(int(held.get(q.name, q.max_nodes)), q.max_nodes) for q in queues}
    reach = reach_hourly(queues, caps)
    return Governance(
        caps=caps,
        reach_usd_per_hour=reach,
        allowed_usd_per_hour=reach,
        capped=any(caps[q.name] < q.max_nodes for q in queues),
        stalled=False,
    )


def needs_applying(cluster: Cluster, governance: Governance) -> bool:
    """Caps the head node does not hold yet (below MaxCount: by the budget or a PATCHed limit)."""
    current = cluster.governor
    if current is None:
        return governance.caps != {q.name: q.max_nodes for q in cluster.spec.queues}
    return current.get("caps") != governance.caps or not current.get("applied")


def apply_caps(
    deps: Deps,
    cluster: Cluster,
    governance: Governance,
    *,
    by: str,
    report: SpendReport | None = None,
    notify: bool = True,
) -> Cluster:
    """Record the caps, have the head node apply them, record that it did; TransientError
    when it did not (the next pass or the step's retry tries again)."""
    queues = queue_reach(deps, cluster)
    before = cluster.governor or {}
    applied_caps = before.get("caps") if before.get("applied") else before.get("applied_caps")
    pending = governor_record(governance, queues, at=iso(deps.clock()), by=by, applied=False, applied_caps=applied_caps)
    cluster = deps.store.update_cluster(cluster.id, {"governor": pending})
    instance = cluster.head_node_instance_id
    if not instance:
        raise TransientError(f"{cluster.id} has no head node to apply its node caps on")
    comment = f"lsstctl: cap {cluster.id} at {render_caps(governance.caps)}"
    command = deps.runner.run_document(
        instance,
        deps.settings.node_cap_document,
        {"nodeRoot": node_root(deps, cluster), "caps": render_caps(governance.caps)},
        comment=comment,
        timeout_seconds=60,
    )
    result = wait_short(deps, command, instance, comment=comment)
    if result.status != "Success" or not node_cap_applied(result.stdout):
        raise TransientError(
            f"the head node did not apply the node caps ({result.status}): {tail(result.stderr or result.stdout, 200)}"
        )
    cluster = deps.store.update_cluster(
        cluster.id, {"governor": {**pending, "applied": True, "applied_caps": governance.caps}}
    )
    metrics.add_metric(name="GovernorCapsApplied", unit="Count", value=1)
    audit.record(deps, "governor:caps", "applied", cluster=cluster.id, owner=cluster.owner, caps=governance.caps, by=by)
    _tell(deps, cluster, before, governance, report, notify=notify)
    return cluster


def _tell(
    deps: Deps,
    cluster: Cluster,
    before: dict[str, Any],
    governance: Governance,
    report: SpendReport | None,
    *,
    notify: bool,
) -> None:
    """An event for every change of caps; the owner hears when the cluster becomes capped
    (the caps it launched with included) and when the cap lifts, not at each lower step."""
    detail = {
        "cluster": cluster.name,
        "cluster_id": cluster.id,
        "owner": cluster.owner,
        "generation": cluster.generation,
        "caps": governance.caps,
        "capped": governance.capped,
        "message": (cluster.governor or {}).get("message"),
        **runway(cluster, report),
    }
    deps.events.publish(CLUSTER_CAPPED, detail)
    was_capped = bool(before.get("capped")) and bool(before.get("applied"))
    if notify and governance.capped != was_capped:
        text = detail["message"] if governance.capped else "no longer capped: the budget carries the whole fleet"
        deps.notifier.notify(cluster.owner, f"{cluster.name}: {text}", detail)


def runway(cluster: Cluster, report: SpendReport | None) -> dict[str, Any]:
    """The budget left and how long it lasts at the current burn."""
    if report is None:
        return {}
    left = max(0.0, cluster.spec.budget_usd - report.spend_usd)
    hours = left / report.burn_usd_per_hour if report.burn_usd_per_hour > 0 else None
    return {"budget_left_usd": round(left, 4), "runway_hours": round(hours, 2) if hours is not None else None}
