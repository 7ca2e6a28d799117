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
excess is bounded by the owner's concurrency, and both are still bounded by their budgets.

Projects (grants) are kept the same way: an admin gives a project a budget, its member
owners and a period (each calendar month, or fixed dates); a cluster launched in a project
(`ClusterSpec.project`, its owner a member) is admitted only if what the project's clusters
spent in the period plus its live clusters' budgets plus the new budget fit under the
project's, and never outside fixed dates."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Any

from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.domain.models import (
    PROJECT_NAME_RE,
    Cluster,
    ClusterState,
    Project,
    ProjectSpec,
    Quota,
    QuotaSpec,
    from_iso,
    iso,
)
from lsstctl.domain.principals import OWNER_NAME
from lsstctl.errors import ForbiddenError, NotFoundError, QuotaExceededError, ValidationError
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_visible
from lsstctl.services.ledgers import current_all


def quota_of(deps: Deps, owner: str) -> Quota:
    s = deps.settings
    quota = deps.store.get_quota(owner) or Quota(
        owner=owner,
        live_clusters=s.quota_live_clusters,
        total_nodes=s.quota_total_nodes,
        total_budget_usd=s.quota_total_budget_usd,
    )
    if quota.monthly_budget_usd is None:
        quota = quota.model_copy(update={"monthly_budget_usd": s.quota_monthly_budget_usd})
    return quota


# Generations that may still spend up to their budget: reserved by it, not by their spend.
RESERVING = ACTIVE | {ClusterState.TEARING_DOWN}


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def committed(
    deps: Deps, owners: Iterable[str], since: datetime, *, project: str | None = None, except_id: str | None = None
) -> float:
    """What the owners' clusters (those of `project` only, when given) spent since `since`
    plus what their live clusters may still spend (their budgets); `except_id`'s live
    generation is left out (it is being checked)."""
    total = 0.0
    for owner in sorted(set(owners)):
        reserving = {
            c.id: c
            for c in deps.store.list_clusters(owner)
            if c.state in RESERVING and (project is None or c.spec.project == project)
        }
        total += sum(c.spec.budget_usd for c in reserving.values() if c.id != except_id)
        for ledger in current_all(deps, owner):
            if project is not None and ledger.get("project") != project:
                continue
            key, generation = ledger.get("cluster_id"), ledger.get("generation")
            if key in reserving and generation == reserving[key].generation:
                continue  # reserved by its budget above
            measured = ledger.get("measured_at")
            if measured and from_iso(str(measured)) >= since:
                total += float(ledger.get("spend_usd") or 0.0)
    return round(total, 4)


def committed_this_month(deps: Deps, owner: str, *, except_id: str | None = None) -> float:
    """The owner's monthly budget's use (see `committed`)."""
    return committed(deps, [owner], month_start(deps.clock()), except_id=except_id)


def _nodes(cluster: Cluster) -> int:
    return sum(q.max_nodes for q in cluster.spec.queues)


def usage(deps: Deps, owner: str, *, except_name: str | None = None) -> dict[str, Any]:
    live = [c for c in deps.store.list_clusters(owner) if c.state != ClusterState.DELETED and c.name != except_name]
    return {
        "live_clusters": len(live),
        "total_nodes": sum(_nodes(c) for c in live),
        "total_budget_usd": round(sum(c.spec.budget_usd for c in live), 2),
        "month_committed_usd": committed_this_month(deps, owner),
    }


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
                field=field,
                details={
                    "limit": limit,
                    "quota": getattr(quota, limit),
                    "used": used[limit],
                    "requested": wanted[limit],
                },
            )
    ceiling = float(quota.monthly_budget_usd or 0.0)
    used_this_month = committed_this_month(deps, cluster.owner, except_id=cluster.id)
    left = max(ceiling - used_this_month, 0.0)
    if cluster.spec.budget_usd > left + 1e-9:
        raise QuotaExceededError(
            f"{cluster.owner}'s monthly budget is ${ceiling:.2f}: ${used_this_month:.2f} is committed this month (spent, "
            f"and reserved by live clusters' budgets), ${left:.2f} is left, and this budget is "
            f"${cluster.spec.budget_usd:.2f} (lower it, end a cluster, or ask an admin to raise the monthly budget)",
            field="budget_usd",
            details={
                "limit": "monthly_budget_usd",
                "quota": ceiling,
                "used": used_this_month,
                "left": round(left, 4),
                "requested": cluster.spec.budget_usd,
            },
        )
    if cluster.spec.project is not None:
        check_project(deps, cluster)


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
    quota = current.model_copy(
        update={**changes, "set_by": principal.arn or principal.name, "set_at": iso(deps.clock())}
    )
    deps.store.put_quota(quota)
    return {"quota": quota.model_dump(mode="json"), "usage": usage(deps, owner)}


# projects (grants) -------------------------------------------------------------------------
def _utc(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def project_period(project: Project, now: datetime) -> tuple[datetime, datetime]:
    """The period whose spend counts now: this calendar month, or the project's fixed dates."""
    if project.starts is not None and project.ends is not None:
        return _utc(project.starts), _utc(project.ends)
    start = month_start(now)
    return start, (
        start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    )


def project_usage(deps: Deps, project: Project, *, except_id: str | None = None) -> dict[str, Any]:
    start, end = project_period(project, deps.clock())
    used = committed(deps, project.members, start, project=project.name, except_id=except_id)
    return {
        "period_start": iso(start),
        "period_end": iso(end),
        "committed_usd": used,
        "left_usd": round(max(project.budget_usd - used, 0.0), 4),
    }


def check_project(deps: Deps, cluster: Cluster) -> None:
    """A cluster in a project: the project exists, its owner is a member, the period is
    open, and the project's budget has room for this cluster's (403, naming the amount left)."""
    name = str(cluster.spec.project)
    project = deps.store.get_project(name)
    if project is None or cluster.owner not in project.members:
        # Not a member: the project is not theirs to see, nor to know of.
        raise ValidationError(f"{cluster.owner} is not a member of a project '{name}'", field="project")
    now = deps.clock()
    start, end = project_period(project, now)
    if not start <= now < end:
        raise ValidationError(f"project '{name}' runs from {iso(start)} to {iso(end)}: not now", field="project")
    usage = project_usage(deps, project, except_id=cluster.id)
    if cluster.spec.budget_usd > usage["left_usd"] + 1e-9:
        raise QuotaExceededError(
            f"project '{name}' has a budget of ${project.budget_usd:.2f} from {usage['period_start']} to "
            f"{usage['period_end']}: ${usage['committed_usd']:.2f} is committed (spent, and reserved by live "
            f"clusters' budgets), ${usage['left_usd']:.2f} is left, and this budget is ${cluster.spec.budget_usd:.2f}",
            field="budget_usd",
            details={
                "limit": "project_budget_usd",
                "quota": project.budget_usd,
                "used": usage["committed_usd"],
                "left": usage["left_usd"],
                "requested": cluster.spec.budget_usd,
            },
        )


def _visible(principal: Principal, project: Project) -> bool:
    return principal.is_admin or principal.name in project.members


def get_project(deps: Deps, principal: Principal, name: str) -> dict[str, Any]:
    """A project, what it has committed and what is left (its members and admins; 404 to others)."""
    project = deps.store.get_project(name)
    if project is None or not _visible(principal, project):
        raise NotFoundError(f"project '{name}' not found")
    return {"project": project.model_dump(mode="json"), "usage": project_usage(deps, project)}


def list_projects(deps: Deps, principal: Principal) -> dict[str, Any]:
    """The projects the caller is a member of (every project, for admins)."""
    return {
        "projects": [
            p.model_dump(mode="json")
            for p in sorted(deps.store.list_projects(), key=lambda p: p.name)
            if _visible(principal, p)
        ]
    }


def set_project(deps: Deps, principal: Principal, name: str, spec: ProjectSpec) -> dict[str, Any]:
    """Admins only: create or change a project (PUT: the same body sets the same project).
    Lowering its budget below what is committed refuses the next launch; it ends nothing."""
    if not principal.is_admin:
        raise ForbiddenError("only an admin may set projects")
    if not re.match(PROJECT_NAME_RE, name):
        raise ValidationError(f"'{name}' is not a project name ({PROJECT_NAME_RE})", field="name")
    project = Project(name=name, **spec.model_dump(), set_by=principal.arn or principal.name, set_at=iso(deps.clock()))
    deps.store.put_project(project)
    return {"project": project.model_dump(mode="json"), "usage": project_usage(deps, project)}
