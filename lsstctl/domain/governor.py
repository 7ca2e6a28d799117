"""The scale governor (pure): how many compute nodes a cluster may reach, so that the
reserve its budget must hold shrinks as the budget runs out.

The guard never lets spend cross a budget: it must start teardown while the most the
cluster can still cost (everything it may burn until the next tick and until its compute
stops, then the head node and storage until the last resource is gone) is below the budget
(lsstctl.domain.cost.spend_ceiling). That reserve is sized by the fleet the cluster can
*reach*: with every queue free to scale to MaxCount, a big fleet must stop while a large
share of its budget is unspent. The governor lowers the reachable size instead: each pass
it picks, per queue, the largest node cap whose reserve still fits in what is left, and the
head node drains the nodes above it (Slurm starts no new node there; pending jobs wait).
As the budget runs down the cap falls geometrically, so the final reserve is that of a
single node, not of the whole fleet; a raised budget raises the cap again. When not even
one compute node fits, no job can progress: the governor says so and the cluster ends.

Bounds it relies on (the head node's cap script keeps them): a queue's nodes at the next
tick are at most max(cap, nodes billing now), because the cap keeps the billing nodes
first and drains the rest; static nodes (min_nodes) are never drained. The caps are chosen
for the fleet once drained; the guard's budget rule, every pass, still counts what bills.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lsstctl.domain.cost import TeardownTiming


@dataclass(frozen=True)
class QueueReach:
    """One queue as the governor sees it."""

    name: str
    min_nodes: int
    max_nodes: int
    node_hourly: float  # its dearest instance type (an upper bound per node)
    running_hourly: float = 0.0  # what its billing nodes burn now, as metered

    def reach_hourly(self, cap: int) -> float:
        """The most it can burn with this cap: the cap's nodes, or what already bills if
        more (nodes above a cap finish their jobs)."""
        return max(min(max(cap, self.min_nodes), self.max_nodes) * self.node_hourly, self.running_hourly)


@dataclass(frozen=True)
class Governance:
    caps: dict[str, int]
    reach_usd_per_hour: float  # compute the caps let the cluster reach
    allowed_usd_per_hour: float  # compute burn the budget could sustain through the next window
    capped: bool  # some queue is below its max_nodes
    stalled: bool  # the budget lets no compute node run at all: no job can progress

    @property
    def nodes(self) -> int:
        return sum(self.caps.values())


def full_caps(queues: list[QueueReach]) -> dict[str, int]:
    return {q.name: q.max_nodes for q in queues}


def reach_hourly(queues: list[QueueReach], caps: Mapping[str, int]) -> float:
    """What the queues can burn until the caps are met: nodes above a cap still billing count."""
    return sum(q.reach_hourly(caps.get(q.name, q.max_nodes)) for q in queues)


def capped_hourly(queues: list[QueueReach], caps: Mapping[str, int]) -> float:
    """What the queues burn at most once the caps are met (the nodes above them drained)."""
    return sum(min(max(caps.get(q.name, q.max_nodes), q.min_nodes), q.max_nodes) * q.node_hourly for q in queues)


def govern(
    *,
    budget_usd: float,
    spend_usd: float,
    base_usd_per_hour: float,
    queues: list[QueueReach],
    caps_now: Mapping[str, int],
    guard_interval_seconds: float,
    timing: TeardownTiming,
) -> Governance:
    """The caps for the coming interval: the largest fleet (filled one node per queue in
    turn) whose spend ceiling at the next tick stays below the budget, assuming the current
    caps (and the nodes billing now) hold until then, a cap taking effect when the head node
    has applied it. The caps may be below what bills now: those nodes drain as their jobs
    end; should they still bill at the next tick, the guard's budget rule counts them
    (lsstctl.services.budget.potential_compute_hourly) and ends the cluster if they do not fit."""
    window = guard_interval_seconds + timing.stop_compute_seconds
    tail = max(0.0, timing.total_seconds - timing.stop_compute_seconds)
    now_reach = base_usd_per_hour + reach_hourly(queues, caps_now)
    left = budget_usd - spend_usd - now_reach * guard_interval_seconds / 3600 - base_usd_per_hour * tail / 3600
    allowed = left * 3600 / window - base_usd_per_hour
    caps = {q.name: q.min_nodes for q in queues}
    grown = True
    while grown:
        grown = False
        for q in queues:
            if caps[q.name] >= q.max_nodes:
                continue
            trial = {**caps, q.name: caps[q.name] + 1}
            if capped_hourly(queues, trial) < allowed:
                caps, grown = trial, True
    return Governance(
        caps=caps,
        reach_usd_per_hour=capped_hourly(queues, caps),
        allowed_usd_per_hour=max(0.0, allowed),
        capped=any(caps[q.name] < q.max_nodes for q in queues),
        # (a queue limited to no node by its owner is paused, not stalled)
        stalled=(
            sum(caps.values()) == 0
            and not any(q.running_hourly > 0 for q in queues)
            and any(q.max_nodes > 0 for q in queues)
        ),
    )


def describe_caps(caps: Mapping[str, int], queues: list[QueueReach]) -> str:
    """'capped at 3 nodes by the budget' (per queue when there are several)."""
    if len(queues) == 1:
        q = queues[0]
        return f"capped at {caps.get(q.name, q.max_nodes)} of {q.max_nodes} nodes by the budget"
    parts = ", ".join(f"{q.name} {caps.get(q.name, q.max_nodes)}/{q.max_nodes}" for q in queues)
    return f"capped by the budget at {parts} nodes"
