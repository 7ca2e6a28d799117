"""Spend arithmetic (pure): what a cluster has cost so far, what it burns now, and when
the guard must start teardown so that the budget is never crossed.

Billing model (AWS's, for Linux): EC2 per second with a 60-second minimum from launch to
termination; EBS, EFS and FSx per GB-month, prorated per second (see pricing.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Literal

MIN_BILLED_SECONDS = 60
WARN_THRESHOLDS = (50, 80, 90)

Role = Literal["head", "compute", "storage"]


@dataclass(frozen=True)
class Resource:
    """One billable thing, as last observed."""

    id: str
    kind: Literal["instance", "volume", "filesystem"]
    role: Role
    type: str
    hourly_usd: float
    started_at: datetime
    ended_at: datetime | None = None  # None: still billing
    size_gib: int | None = None
    pricing: str = "on-demand"

    def spend(self, now: datetime) -> float:
        end = min(self.ended_at or now, now)
        seconds = max(0.0, (end - self.started_at).total_seconds())
        if self.kind == "instance" and seconds > 0:
            seconds = max(seconds, MIN_BILLED_SECONDS)
        return self.hourly_usd * seconds / 3600

    def billing(self, now: datetime) -> bool:
        return self.ended_at is None or self.ended_at > now


@dataclass(frozen=True)
class SpendReport:
    measured_at: datetime
    spend_usd: float
    burn_usd_per_hour: float  # what runs now
    base_burn_usd_per_hour: float  # head node and storage: what teardown cannot stop at once
    max_burn_usd_per_hour: float  # if every queue scaled to MaxCount now
    breakdown: list[dict[str, Any]] = field(default_factory=list)

    def projected_budget_at(self, budget_usd: float) -> datetime | None:
        """When spend reaches the budget at the current burn (None: it never does)."""
        if self.spend_usd >= budget_usd:
            return self.measured_at
        if self.burn_usd_per_hour <= 0:
            return None
        return self.measured_at + timedelta(hours=(budget_usd - self.spend_usd) / self.burn_usd_per_hour)

    def to_dict(self, budget_usd: float | None = None) -> dict[str, Any]:
        # Field by field, each breakdown line copied (its values are plain): `asdict`'s deep copy
        # was half the guard's own time a cluster.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["measured_at"] = self.measured_at.isoformat()
        data["breakdown"] = [dict(line) for line in self.breakdown]
        if budget_usd is not None:
            at = self.projected_budget_at(budget_usd)
            data["budget_usd"] = budget_usd
            data["projected_budget_at"] = at.isoformat() if at else None
            data["budget_used_percent"] = round(100 * self.spend_usd / budget_usd, 2)
        return data


def measure(resources: list[Resource], now: datetime, *, potential_compute_usd_per_hour: float) -> SpendReport:
    """Sum what each resource has cost until `now` and what the running ones burn."""
    breakdown = []
    burn = base = 0.0
    for r in sorted(resources, key=lambda r: (r.role, r.id)):
        running = r.billing(now)
        if running:
            burn += r.hourly_usd
            if r.role != "compute":
                base += r.hourly_usd
        breakdown.append(
            {
                "id": r.id,
                "kind": r.kind,
                "role": r.role,
                "type": r.type,
                "pricing": r.pricing,
                "hourly_usd": r.hourly_usd,  # unrounded: a later spend is computed from it
                "spend_usd": round(r.spend(now), 6),
                "billing": running,
                "started_at": r.started_at.isoformat(),
                "ended_at": r.ended_at.isoformat() if r.ended_at else None,
            }
        )
    spend = sum(r.spend(now) for r in resources)
    return SpendReport(
        measured_at=now,
        spend_usd=spend,
        burn_usd_per_hour=burn,
        base_burn_usd_per_hour=base,
        max_burn_usd_per_hour=base + potential_compute_usd_per_hour,
        breakdown=breakdown,
    )


def resource_from(data: dict[str, Any]) -> Resource:
    """A resource as a ledger's breakdown holds it."""
    return Resource(
        id=data["id"],
        kind=data["kind"],
        role=data["role"],
        type=data["type"],
        hourly_usd=data["hourly_usd"],
        started_at=datetime.fromisoformat(data["started_at"]),
        ended_at=datetime.fromisoformat(data["ended_at"]) if data.get("ended_at") else None,
        pricing=data.get("pricing", "on-demand"),
    )


# A ledger is written when what it says changes, not at every measurement: while the same
# resources bill at the same prices (and its budget, state, caps and warnings stay), what it
# has cost by any later time follows from its breakdown alone (`ledger_as_of`).
_MOVING = frozenset({"measured_at", "spend_usd", "projected_budget_at", "budget_used_percent", "history"})


def _standing(ledger: dict[str, Any]) -> dict[str, Any]:
    """What a ledger says apart from the passing of time."""
    standing = {k: v for k, v in ledger.items() if k not in _MOVING and k != "breakdown"}
    standing["breakdown"] = [{k: v for k, v in r.items() if k != "spend_usd"} for r in ledger.get("breakdown", [])]
    return standing


def ledger_changed(previous: dict[str, Any] | None, ledger: dict[str, Any]) -> bool:
    """True when `ledger` says something `previous` did not, beyond the time passed since."""
    return not previous or _standing(previous) != _standing(ledger)


def ledger_as_of(ledger: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The ledger carried forward to `at`, when nothing in it changed since it was measured
    (the caller knows: the guard measured it unchanged at `at`): each resource's spend to
    `at` from its own start, end and price, exactly as a measurement at `at` would give."""
    measured = ledger.get("measured_at")
    if not measured or at <= datetime.fromisoformat(measured):
        return ledger
    report = measure([resource_from(r) for r in ledger.get("breakdown", [])], at, potential_compute_usd_per_hour=0.0)
    budget = ledger.get("budget_usd")
    carried = {**ledger, **report.to_dict(budget)}
    carried["max_burn_usd_per_hour"] = ledger.get("max_burn_usd_per_hour", report.max_burn_usd_per_hour)
    return carried


@dataclass(frozen=True)
class TeardownTiming:
    """How long teardown takes, as measured on past teardowns (seconds)."""

    stop_compute_seconds: float  # until compute no longer bills
    total_seconds: float  # until the last billable resource stops


def spend_ceiling(report: SpendReport, *, guard_interval_seconds: float, timing: TeardownTiming) -> float:
    """The most this cluster can have cost when its last resource stops, if teardown starts
    at the next tick: until compute stops, assume every queue scales to MaxCount (bursts
    happen between ticks); after that only the head node and storage bill."""
    compute_window = guard_interval_seconds + timing.stop_compute_seconds
    tail = max(0.0, timing.total_seconds - timing.stop_compute_seconds)
    return (
        report.spend_usd
        + report.max_burn_usd_per_hour * compute_window / 3600
        + report.base_burn_usd_per_hour * tail / 3600
    )


def must_stop_for_budget(
    report: SpendReport, budget_usd: float, *, guard_interval_seconds: float, timing: TeardownTiming
) -> bool:
    """True when waiting one more guard interval could let spend reach the budget."""
    return spend_ceiling(report, guard_interval_seconds=guard_interval_seconds, timing=timing) >= budget_usd


def thresholds_crossed(spend_usd: float, budget_usd: float, already: set[int]) -> list[int]:
    used = 100 * spend_usd / budget_usd
    return [t for t in WARN_THRESHOLDS if used >= t and t not in already]


def job_cost_usd(
    *,
    started_at: datetime | None,
    ended_at: datetime | None,
    now: datetime,
    node_count: int,
    cpus: int | None,
    node_hourly_usd: float,
    node_vcpus: int | None,
) -> float:
    """What one job cost: the node-hours Slurm gave it (from its start to its end, or now),
    at its nodes' hourly price, times its share of those nodes (its CPUs over theirs; whole
    nodes when either is unknown). What no job used of a cluster's spend is idle."""
    if started_at is None:
        return 0.0
    hours = max(0.0, ((ended_at or now) - started_at).total_seconds()) / 3600
    share = 1.0
    if cpus and node_vcpus:
        share = min(1.0, cpus / (node_count * node_vcpus))
    return node_hourly_usd * node_count * hours * share


# The guard's measurements kept as a time series in the ledger (GET .../cost/history): at most
# HISTORY_POINTS points; when full, the spacing doubles (a month at the guard's minute keeps
# one point every 2-4 hours), and the latest measurement is always the last point.
HISTORY_POINTS = 360


def with_sample(
    history: dict[str, Any] | None,
    at: datetime,
    spend_usd: float,
    burn_usd_per_hour: float,
    *,
    max_points: int = HISTORY_POINTS,
    first_step_seconds: int = 60,
) -> dict[str, Any]:
    """The history with one more measurement: {"step_seconds", "points": [[at, spend, burn]]}.
    All points but the last are at least `step_seconds` apart; a repeated measurement (the
    same `at`, a tick delivered twice) replaces the last point instead of adding one."""
    step = int((history or {}).get("step_seconds") or first_step_seconds)
    points: list[list[Any]] = [list(p) for p in (history or {}).get("points", [])]
    sample = [at.isoformat(), round(spend_usd, 6), round(burn_usd_per_hour, 6)]
    if points and datetime.fromisoformat(points[-1][0]) >= at:
        points[-1] = sample if points[-1][0] == sample[0] else points[-1]
        return {"step_seconds": step, "points": points}
    # The last point stays only if it is a step after the one before it (else it was only
    # "the latest" and the new sample takes that role).
    if len(points) >= 2 and _seconds(points[-2], points[-1]) < step:
        points.pop()
    points.append(sample)
    while len(points) > max_points:
        step *= 2
        points = _thinned(points, step)
    return {"step_seconds": step, "points": points}


def _seconds(a: list[Any], b: list[Any]) -> float:
    return (datetime.fromisoformat(b[0]) - datetime.fromisoformat(a[0])).total_seconds()


def _thinned(points: list[list[Any]], step: int) -> list[list[Any]]:
    kept = [points[0]]
    for point in points[1:-1]:
        if _seconds(kept[-1], point) >= step:
            kept.append(point)
    return [*kept, points[-1]] if len(points) > 1 else kept
