"""Quotes before launch (GET /quote): what a preset costs per hour at rest, at full size and
with some nodes in use, what a run of some hours costs, and whether a budget would be
admitted, and how. The numbers are the guard's and admission control's own: the same price
catalog, the same per-queue node prices (`queue_reach`), the same budget check
(`check_budget_is_enough`), so a quote cannot promise what the guard would not keep."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as ModelError

from lsstctl.domain.models import Cluster, ClusterSpec, iso
from lsstctl.domain.presets import hourly_prices
from lsstctl.domain.presets import preset as find_preset
from lsstctl.errors import ValidationError
from lsstctl.services.budget import check_budget_is_enough, queue_reach
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal

MAX_QUOTE_HOURS = 30 * 24  # a cluster's longest lifetime
QUOTE_NAME = "quote"


def quote(
    deps: Deps,
    principal: Principal,
    *,
    hours: float,
    preset: str | None = None,
    spec: dict[str, Any] | None = None,
    nodes: int | None = None,
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """The quote for a preset, or for a whole cluster spec (POST /clusters' body; its
    `budget_usd` judged unless `budget_usd` is given)."""
    if (preset is None) == (spec is None):
        raise ValidationError("name a preset or give a cluster spec (one of them)", field="preset")
    if preset is not None:
        try:
            find_preset(preset)
        except ValueError as error:
            raise ValidationError(str(error), field="preset") from None
    if not 0 < hours <= MAX_QUOTE_HOURS:
        raise ValidationError(f"hours must be above 0 and at most {MAX_QUOTE_HOURS}", field="hours")
    if budget_usd is not None and not 0 < budget_usd <= 100_000:
        raise ValidationError("budget_usd must be above 0 and at most 100000", field="budget_usd")
    judged = budget_usd if budget_usd is not None else (spec or {}).get("budget_usd")
    cluster = _cluster(deps, principal, {"preset": preset} if preset else dict(spec or {}), hours, judged)
    reach = queue_reach(deps, cluster)
    largest = sum(q.max_nodes for q in reach)
    in_use = largest if nodes is None else nodes
    if not 0 <= in_use <= largest:
        raise ValidationError(f"nodes must be 0 to {largest} (the queues at full size)", field="nodes")
    region = cluster.spec.region or deps.settings.region
    queues = [q.model_dump() for q in cluster.spec.queues]
    prices = hourly_prices(
        deps.catalog, region, cluster.spec.head_node_type, queues, cluster.spec.shared_storage.model_dump()
    )
    # Nodes in use fill the queues in order (the first queue is where jobs go by default).
    compute, left, by_queue = 0.0, in_use, []
    for q in reach:
        n = min(left, q.max_nodes)
        left -= n
        compute += n * q.node_hourly
        by_queue.append({"queue": q.name, "nodes": n, "max_nodes": q.max_nodes, "node_usd_per_hour": q.node_hourly})
    hourly = prices["at_rest_usd_per_hour"] + compute
    answer: dict[str, Any] = {
        "preset": cluster.spec.preset,
        "region": region,
        "prices_as_of": deps.catalog.as_of,
        "hours": hours,
        "nodes": in_use,
        "max_nodes": largest,
        **prices,
        "in_use_usd_per_hour": round(hourly, 4),
        "run_usd": round(hours * hourly, 4),
        "queues": by_queue,
        # Spot nodes are quoted at the on-demand price: what they can cost at most (the guard
        # meters them at the spot price EC2 reports).
        "pricing": "on-demand" if all(q.get("capacity_type") != "spot" for q in queues) else "spot at most",
    }
    if judged is not None:
        answer["budget"] = _admission(deps, cluster, hourly, hours * hourly)
    return answer


def _cluster(
    deps: Deps, principal: Principal, fields: dict[str, Any], hours: float, budget_usd: float | None
) -> Cluster:
    """The cluster a launch of this spec would create (never stored): what admission judges."""
    data = {"name": QUOTE_NAME, **fields, "budget_usd": budget_usd or 100_000, "max_lifetime_hours": hours}
    try:
        spec = ClusterSpec.model_validate(data)
    except ModelError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        field = {"budget_usd": "budget_usd", "max_lifetime_hours": "hours", "preset": "preset"}.get(
            where, where if "preset" in fields and len(fields) == 1 else f"spec.{where}"
        )
        raise ValidationError(f"{field}: {first['msg']}", field=field) from None
    now = iso(deps.clock())
    return Cluster(name=spec.name, owner=principal.name, spec=spec, created_at=now, updated_at=now)


def _admission(deps: Deps, cluster: Cluster, hourly: float, run_usd: float) -> dict[str, Any]:
    budget = cluster.spec.budget_usd
    verdict: dict[str, Any] = {
        "budget_usd": budget,
        "covers_run": run_usd <= budget,
        "hours_at_this_size": round(budget / hourly, 2) if hourly > 0 else None,
    }
    try:
        capped = check_budget_is_enough(deps, cluster)
    except ValidationError as refused:
        return {**verdict, "admitted": False, "capped": False, "reason": refused.message}
    if capped is None:
        return {**verdict, "admitted": True, "capped": False, "reason": None}
    return {**verdict, "admitted": True, "capped": True, "caps": capped.get("caps"), "reason": capped.get("message")}
