"""What a cluster may cost at most: the fleet it can reach (its queues, capped by the scale
governor), how long teardown takes, and the launch-time check that its budget can cover
starting and stopping it at all (launched capped when it covers only part of its fleet)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lsstctl.domain.cost import SpendReport, TeardownTiming, spend_ceiling
from lsstctl.domain.governor import Governance, QueueReach, describe_caps, full_caps, govern, reach_hourly
from lsstctl.domain.models import Cluster, iso
from lsstctl.domain.models import ClusterState as S
from lsstctl.domain.presets import at_rest_hourly
from lsstctl.domain.pricing import UnknownPriceError
from lsstctl.errors import ValidationError
from lsstctl.services.deps import Deps

# Before READY no job can be submitted, so no dynamic node starts: the caps chosen at launch
# hold until the launch applies them on the head node (lsstctl.services.governor.apply_caps).
BEFORE_JOBS = frozenset({S.REQUESTED, S.LAUNCHING, S.INSTALLING})


def queue_reach(deps: Deps, cluster: Cluster, running: Mapping[str, float] | None = None) -> list[QueueReach]:
    """Each queue priced at its dearest type, on-demand (spot too: an upper bound), with
    what its billing nodes burn now, and as many nodes as it may reach (a PATCHed limit)."""
    region = cluster.spec.region or deps.settings.region
    running = dict(running or {})
    names = {q.name for q in cluster.spec.queues}
    limits = cluster.node_limits or {}
    # A compute node without a known queue still bills: counted with the first queue.
    stray = sum(v for k, v in running.items() if k not in names)
    return [
        QueueReach(
            name=q.name,
            min_nodes=q.min_nodes,
            max_nodes=min(q.max_nodes, limits.get(q.name, q.max_nodes)),
            node_hourly=max(deps.catalog.instance_hourly(region, t) for t in q.instance_types),
            running_hourly=running.get(q.name, 0.0) + (stray if i == 0 else 0.0),
        )
        for i, q in enumerate(cluster.spec.queues)
    ]


def effective_caps(deps: Deps, cluster: Cluster) -> dict[str, int]:
    """The node caps the reserve must assume: those the head node has applied; while a new
    cap is not known to be applied, the larger of it and the last applied one."""
    full = {q.name: q.max_nodes for q in cluster.spec.queues}
    governor = cluster.governor
    if not deps.settings.governor or not governor:
        return full
    caps = {q: min(int(governor["caps"].get(q, n)), n) for q, n in full.items()}
    if governor.get("applied") or cluster.state in BEFORE_JOBS:
        return caps
    before = governor.get("applied_caps") or full
    return {q: max(caps[q], min(int(before.get(q, n)), n)) for q, n in full.items()}


def potential_compute_hourly(deps: Deps, cluster: Cluster, running: Mapping[str, float] | None = None) -> float:
    """The compute burn the cluster can reach before the next tick: each queue's node cap
    (MaxCount without the governor) of its dearest type, or what already bills if more."""
    return reach_hourly(queue_reach(deps, cluster, running), effective_caps(deps, cluster))


def teardown_timing(deps: Deps) -> TeardownTiming:
    """The slowest of the recent teardowns (or the configured default before any), plus the
    grace running jobs get before compute stops (samples are recorded without it: a teardown
    with no running job waits none, the next one may wait it all)."""
    samples = deps.store.teardown_timings()
    s = deps.settings
    grace = s.teardown_grace_seconds
    if not samples:
        return TeardownTiming(s.default_stop_compute_seconds + grace, s.default_teardown_seconds + grace)
    return TeardownTiming(max(x[0] for x in samples) + grace, max(x[1] for x in samples) + grace)


def governor_record(
    governance: Governance,
    queues: list[QueueReach],
    *,
    at: str,
    by: str,
    applied: bool,
    applied_caps: Mapping[str, int] | None,
) -> dict[str, Any]:
    """What the cluster record keeps of the governor (Cluster.governor)."""
    return {
        "caps": dict(governance.caps),
        "capped": governance.capped,
        "applied": applied,
        "applied_caps": dict(applied_caps) if applied_caps is not None else None,
        "message": describe_caps(governance.caps, queues) if governance.capped else "not capped",
        "at": at,
        "by": by,
    }


def check_budget_is_enough(deps: Deps, cluster: Cluster) -> dict[str, Any] | None:
    """Refuse a launch whose own teardown could not fit in its budget, or whose instances
    have no known price (then no budget could be guaranteed). With the governor, a budget
    that sustains only part of the fleet launches capped: the record it should start with
    (None: not capped)."""
    region = cluster.spec.region or deps.settings.region
    try:
        # What bills whatever runs (head node and shared storage), as the guard meters it.
        storage = cluster.spec.shared_storage
        head = at_rest_hourly(deps.catalog, region, cluster.spec.head_node_type, storage.type, storage.size_gib)
        queues = queue_reach(deps, cluster)
    except UnknownPriceError as error:
        raise ValidationError(
            f"{error.message} Without a price the budget cannot be guaranteed; choose a priced instance type.",
            field="queues" if cluster.spec.head_node_type in deps.catalog.instance_types(region) else "head_node_type",
        ) from error
    governed = deps.settings.governor
    # Without the governor every queue may reach MaxCount; with it, only static nodes run
    # before the first cap is applied.
    first = {q.name: q.min_nodes for q in queues} if governed else full_caps(queues)
    base = SpendReport(
        measured_at=deps.clock(),
        spend_usd=0.0,
        burn_usd_per_hour=head,
        base_burn_usd_per_hour=head,
        max_burn_usd_per_hour=head + reach_hourly(queues, first),
    )
    timing = teardown_timing(deps)
    interval = deps.settings.guard_interval_seconds
    floor = spend_ceiling(base, guard_interval_seconds=interval, timing=timing)
    if floor >= cluster.spec.budget_usd:
        raise ValidationError(
            f"budget_usd {cluster.spec.budget_usd:.2f} cannot cover even starting and tearing down this cluster "
            f"at {'its static size' if governed else 'its maximum size'} (at least ${floor:.2f}); "
            "raise the budget or lower " + ("min_nodes" if governed else "max_nodes"),
            field="budget_usd",
        )
    if not governed:
        return None

    def steer(spend_usd: float, caps_now: Mapping[str, int]) -> Governance:
        return govern(
            budget_usd=cluster.spec.budget_usd,
            spend_usd=spend_usd,
            base_usd_per_hour=head,
            queues=queues,
            caps_now=caps_now,
            guard_interval_seconds=interval,
            timing=timing,
        )

    governance = steer(0.0, first)
    if not governance.stalled:
        # The guard's first pass sees these caps in force, an interval's spend behind it. If it
        # could not carry a node then, it would end the cluster at once: refuse it now. If it
        # would cap lower, launch with that.
        next_pass = steer((head + reach_hourly(queues, first)) * interval / 3600, governance.caps)
        if next_pass.stalled or any(next_pass.caps[q] < n for q, n in governance.caps.items()):
            governance = next_pass
    if governance.stalled:
        raise ValidationError(
            f"budget_usd {cluster.spec.budget_usd:.2f} cannot keep even one compute node running through the "
            f"guard's reaction and teardown (a node of {queues[0].name} costs ${queues[0].node_hourly:.2f}/h); "
            "raise the budget or choose cheaper instance types",
            field="budget_usd",
        )
    if not governance.capped:
        return None
    return governor_record(governance, queues, at=iso(deps.clock()), by="admission", applied=False, applied_caps=None)
