"""Blast-radius limits per owner: live clusters, their compute nodes at full size and their
budgets, summed over the owner's clusters that are not deleted. The deployment's defaults
(LSSTCTL_QUOTA_*) hold unless an admin set the owner's own (PUT /quotas/{owner}).

A launch is checked before anything exists. Two launches of one owner racing each other
may both pass the check (each sees the other's cluster only once it is recorded): the
excess is bounded by the owner's concurrency, and both are still bounded by their budgets."""
from __future__ import annotations

from typing import Any

from lsstctl.domain.models import Cluster, ClusterState, Quota, QuotaSpec, iso
from lsstctl.domain.principals import OWNER_NAME
from lsstctl.errors import ForbiddenError, QuotaExceededError, ValidationError
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_visible


def quota_of(deps: Deps, owner: str) -> Quota:
    s = deps.settings
    return deps.store.get_quota(owner) or Quota(owner=owner, live_clusters=s.quota_live_clusters,
                                                total_nodes=s.quota_total_nodes,
                                                total_budget_usd=s.quota_total_budget_usd)


def _nodes(cluster: Cluster) -> int:
    return sum(q.max_nodes for q in cluster.spec.queues)


def usage(deps: Deps, owner: str, *, except_name: str | None = None) -> dict[str, Any]:
    live = [c for c in deps.store.list_clusters(owner) if c.state != ClusterState.DELETED and c.name != except_name]
    return {"live_clusters": len(live), "total_nodes": sum(_nodes(c) for c in live),
            "total_budget_usd": round(sum(c.spec.budget_usd for c in live), 2)}


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
