"""Blast-radius limits per owner: live clusters, their compute nodes at full size and their
budgets, summed over the owner's clusters that are not deleted; and a monthly budget, the
owner's ceiling for a calendar month (UTC). The deployment's defaults (LSSTCTL_QUOTA_*) hold
unless an admin set the owner's own (PUT /quotas/{owner}).

The monthly budget is kept by reservation: a launch (or a raised budget) is admitted only if
what the owner's clusters spent this month (ended generations: their final spend) plus what
their live clusters may still spend (their whole budgets, which the guard never lets them
pass) plus the new budget fit under it. So the month's spend cannot pass the ceiling however
many clusters share it, and a cluster relaunched after its budget teardown starts from what is
left, not from a fresh budget.

A launch is checked before anything exists. Two launches of one owner racing each other
may both pass the check (each sees the other's cluster only once it is recorded): the
excess is bounded by the owner's concurrency, and both are still bounded by their budgets."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.domain.models import Cluster, ClusterState, Quota, QuotaSpec, from_iso, iso
from lsstctl.domain.principals import OWNER_NAME
from lsstctl.errors import ForbiddenError, QuotaExceededError, ValidationError
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_visible


def quota_of(deps: Deps, owner: str) -> Quota:
    s = deps.settings
    quota = deps.store.get_quota(owner) or Quota(owner=owner, live_clusters=s.quota_live_clusters,
                                                 total_nodes=s.quota_total_nodes,
                                                 total_budget_usd=s.quota_total_budget_usd)
    if quota.monthly_budget_usd is None:
        quota = quota.model_copy(update={"monthly_budget_usd": s.quota_monthly_budget_usd})
    return quota


# Generations that may still spend up to their budget: reserved by it, not by their spend.
RESERVING = ACTIVE | {ClusterState.TEARING_DOWN}


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def committed_this_month(deps: Deps, owner: str, *, except_id: str | None = None) -> float:
    """What the owner's clusters spent this month plus what their live clusters may still
    spend (their budgets); `except_id`'s live generation is left out (it is being checked)."""
    start = month_start(deps.clock())
    reserving = {c.id: c for c in deps.store.list_clusters(owner) if c.state in RESERVING}
    total = sum(c.spec.budget_usd for c in reserving.values() if c.id != except_id)
    for ledger in deps.store.list_ledgers(owner):
        key, generation = ledger.get("cluster_id"), ledger.get("generation")
        if key in reserving and generation == reserving[key].generation:
            continue  # reserved by its budget above
        measured = ledger.get("measured_at")
        if measured and from_iso(str(measured)) >= start:
            total += float(ledger.get("spend_usd") or 0.0)
    return round(total, 4)


def _nodes(cluster: Cluster) -> int:
    return sum(q.max_nodes for q in cluster.spec.queues)


def usage(deps: Deps, owner: str, *, except_name: str | None = None) -> dict[str, Any]:
    live = [c for c in deps.store.list_clusters(owner) if c.state != ClusterState.DELETED and c.name != except_name]
    return {"live_clusters": len(live), "total_nodes": sum(_nodes(c) for c in live),
            "total_budget_usd": round(sum(c.spec.budget_usd for c in live), 2),
            "month_committed_usd": committed_this_month(deps, owner)}


def check_launch(deps: Deps, cluster: Cluster) -> None:
    """Refuse (403 quota_exceeded, naming the limit) a launch the owner's quota cannot hold.
    The cluster's own name is left out of the usage, so a repeated request converges."""
    quota = quota_of(deps, cluster.owner)
    used = usage(deps, cluster.owner, except_name=cluster.name)
    wanted = {"live_clusters": 1, "total_nodes": _nodes(cluster), "total_budget_usd": cluster.spec.budget_usd}
    fields = {"live_clusters": "name", "total_nodes": "queues", "total_budget_usd": "budget_usd"}
    for limit, field in fields.items():
        if used[limit] + wanted[limit] > getattr(quota, limit):
            raise QuotaExceededError(
                f"{cluster.owner}'s quota allows {getattr(quota, limit)} {limit.replace('_', ' ')}; "
                f"{used[limit]} in use, this launch needs {wanted[limit]} more (ask an admin to raise it, or "
                "delete a cluster)",
                field=field, details={"limit": limit, "quota": getattr(quota, limit), "used": used[limit],
                                      "requested": wanted[limit]})
    ceiling = float(quota.monthly_budget_usd or 0.0)
    committed = committed_this_month(deps, cluster.owner, except_id=cluster.id)
    left = max(ceiling - committed, 0.0)
    if cluster.spec.budget_usd > left + 1e-9:
        raise QuotaExceededError(
            f"{cluster.owner}'s monthly budget is ${ceiling:.2f}: ${committed:.2f} is committed this month (spent, "
            f"and reserved by live clusters' budgets), ${left:.2f} is left, and this budget is "
            f"${cluster.spec.budget_usd:.2f} (lower it, end a cluster, or ask an admin to raise the monthly budget)",
            field="budget_usd", details={"limit": "monthly_budget_usd", "quota": ceiling, "used": committed,
                                         "left": round(left, 4), "requested": cluster.spec.budget_usd})


def get_quota(deps: Deps, principal: Principal, owner: str) -> dict[str, Any]:
    """The owner's quota and what is in use (the owner and admins)."""
    ensure_visible(principal, owner, f"quota of '{owner}'")
    return {"quota": quota_of(deps, owner).model_dump(mode="json"), "usage": usage(deps, owner)}


def set_quota(deps: Deps, principal: Principal, owner: str, spec: QuotaSpec) -> dict[str, Any]:
    """Admins only. Lowering a quota below what is in use refuses the next launch; it
    deletes nothing."""
    if not principal.is_admin:
        raise ForbiddenError("only an admin may set quotas")
    if not OWNER_NAME.match(owner):
        raise ValidationError(f"'{owner}' is not an owner name ({OWNER_NAME.pattern})", field="owner")
    current = quota_of(deps, owner)
    changes = {k: v for k, v in spec.model_dump().items() if v is not None}
    quota = current.model_copy(update={**changes, "set_by": principal.arn or principal.name, "set_at": iso(deps.clock())})
    deps.store.put_quota(quota)
    return {"quota": quota.model_dump(mode="json"), "usage": usage(deps, owner)}
