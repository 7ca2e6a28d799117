"""What a cluster may cost at most: its potential burn, how long teardown takes, and the
launch-time check that its budget can cover starting and stopping it at all."""
from __future__ import annotations

from lsstctl.domain.cost import SpendReport, TeardownTiming, spend_ceiling
from lsstctl.domain.models import Cluster
from lsstctl.domain.pricing import UnknownPriceError
from lsstctl.errors import ValidationError
from lsstctl.services.deps import Deps


def potential_compute_hourly(deps: Deps, cluster: Cluster) -> float:
    """Compute burn if every queue ran MaxCount of its dearest type (spot priced as
    on-demand: an upper bound)."""
    region = cluster.spec.region or deps.settings.region
    return deps.catalog.full_size_compute_hourly(region, [(q.max_nodes, q.instance_types) for q in cluster.spec.queues])


def teardown_timing(deps: Deps) -> TeardownTiming:
    """The slowest of the recent teardowns (or the configured default before any)."""
    samples = deps.store.teardown_timings()
    s = deps.settings
    if not samples:
        return TeardownTiming(s.default_stop_compute_seconds, s.default_teardown_seconds)
    return TeardownTiming(max(x[0] for x in samples), max(x[1] for x in samples))


def check_budget_is_enough(deps: Deps, cluster: Cluster) -> None:
    """Refuse a launch whose own teardown could not fit in its budget, or whose instances
    have no known price (then no budget could be guaranteed)."""
    region = cluster.spec.region or deps.settings.region
    try:
        head = deps.catalog.instance_hourly(region, cluster.spec.head_node_type)
        potential = potential_compute_hourly(deps, cluster)
    except UnknownPriceError as error:
        raise ValidationError(
            f"{error.message} Without a price the budget cannot be guaranteed; choose a priced instance type.",
            field="queues" if cluster.spec.head_node_type in deps.catalog.instance_types(region) else "head_node_type",
        ) from error
    base = SpendReport(measured_at=deps.clock(), spend_usd=0.0, burn_usd_per_hour=head, base_burn_usd_per_hour=head,
                       max_burn_usd_per_hour=head + potential)
    floor = spend_ceiling(base, guard_interval_seconds=deps.settings.guard_interval_seconds, timing=teardown_timing(deps))
    if floor >= cluster.spec.budget_usd:
        raise ValidationError(
            f"budget_usd {cluster.spec.budget_usd:.2f} cannot cover even starting and tearing down this cluster "
            f"at its maximum size (at least ${floor:.2f}); raise the budget or lower max_nodes",
            field="budget_usd",
        )
