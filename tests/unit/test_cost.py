"""Spend arithmetic against hand-computed values, and the guard's stopping rule."""

from datetime import UTC, datetime, timedelta

import pytest

from lsstctl.domain.cost import (
    Resource,
    TeardownTiming,
    ledger_as_of,
    ledger_changed,
    measure,
    must_stop_for_budget,
    spend_ceiling,
    thresholds_crossed,
)
from lsstctl.domain.pricing import gb_month_to_hourly

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def instance(id_: str, hourly: float, minutes: float, role: str = "compute", ended: float | None = None) -> Resource:
    return Resource(
        id=id_,
        kind="instance",
        role=role,
        type="x",
        hourly_usd=hourly,
        started_at=T0,
        ended_at=T0 + timedelta(minutes=ended) if ended is not None else None,
    )


def test_per_second_billing_with_a_one_minute_minimum():
    # c5.xlarge at $0.17/h for 90 minutes = $0.255
    assert instance("i", 0.17, 0).spend(T0 + timedelta(minutes=90)) == pytest.approx(0.255)
    # 10 seconds of a $3.60/h instance bill the 60-second minimum: $0.06
    assert instance("i", 3.6, 0).spend(T0 + timedelta(seconds=10)) == pytest.approx(0.06)
    # a terminated instance stops costing at its end
    assert instance("i", 1.0, 0, ended=30).spend(T0 + timedelta(hours=5)) == pytest.approx(0.5)


def test_storage_is_prorated_per_gb_month():
    # gp3 200 GiB at $0.08/GB-month: $16 over 730 h, so $0.021918/h
    assert gb_month_to_hourly(0.08, 200) * 730 == pytest.approx(16.0)
    assert gb_month_to_hourly(0.08, 200) == pytest.approx(0.0219178, rel=1e-5)


def test_measure_separates_what_teardown_can_stop_at_once():
    resources = [
        instance("head", 0.0416, 0, role="head"),
        instance("c1", 0.17, 0),
        instance("c2", 0.17, 0, ended=30),
        Resource(
            id="vol", kind="volume", role="storage", type="gp3", hourly_usd=gb_month_to_hourly(0.08, 200), started_at=T0
        ),
    ]
    now = T0 + timedelta(hours=2)
    report = measure(resources, now, potential_compute_usd_per_hour=0.17 * 4)
    # head 2h*0.0416 + c1 2h*0.17 + c2 0.5h*0.17 + vol 2h*0.0219178
    assert report.spend_usd == pytest.approx(0.0832 + 0.34 + 0.085 + 0.0438356, rel=1e-6)
    assert report.burn_usd_per_hour == pytest.approx(0.0416 + 0.17 + 0.0219178, rel=1e-6)
    assert report.base_burn_usd_per_hour == pytest.approx(0.0416 + 0.0219178, rel=1e-6)
    assert report.max_burn_usd_per_hour == pytest.approx(0.0416 + 0.0219178 + 0.68, rel=1e-6)
    assert [b["id"] for b in report.breakdown if not b["billing"]] == ["c2"]
    at = report.projected_budget_at(10.0)
    assert at == now + timedelta(hours=(10.0 - report.spend_usd) / report.burn_usd_per_hour)


def test_the_ceiling_covers_a_burst_until_compute_stops_and_the_base_until_the_end():
    report = measure(
        [instance("head", 1.0, 0, role="head")], T0 + timedelta(hours=1), potential_compute_usd_per_hour=59.0
    )
    timing = TeardownTiming(stop_compute_seconds=120, total_seconds=1200)
    # $1 so far + $60/h for (60 + 120) s + $1/h for (1200 - 120) s = 1 + 3 + 0.3
    assert spend_ceiling(report, guard_interval_seconds=60, timing=timing) == pytest.approx(4.3)
    assert must_stop_for_budget(report, 4.3, guard_interval_seconds=60, timing=timing)
    assert not must_stop_for_budget(report, 4.31, guard_interval_seconds=60, timing=timing)


def test_warnings_cross_each_threshold_once():
    assert thresholds_crossed(55, 100, set()) == [50]
    assert thresholds_crossed(95, 100, {50}) == [80, 90]
    assert thresholds_crossed(95, 100, {50, 80, 90}) == []


def test_a_jobs_cost_is_its_share_of_its_nodes_for_the_time_it_ran():
    from lsstctl.domain.cost import job_cost_usd

    start = datetime(2026, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    # Two whole 16-vCPU nodes for half an hour at $0.68/h each.
    assert job_cost_usd(
        started_at=start,
        ended_at=start + hour / 2,
        now=start + hour,
        node_count=2,
        cpus=32,
        node_hourly_usd=0.68,
        node_vcpus=16,
    ) == pytest.approx(0.68)
    # Four CPUs of one such node for an hour, still running: a quarter of the node, up to now.
    assert job_cost_usd(
        started_at=start, ended_at=None, now=start + hour, node_count=1, cpus=4, node_hourly_usd=0.68, node_vcpus=16
    ) == pytest.approx(0.17)
    # Never started: nothing. Unknown vCPUs: whole nodes.
    assert (
        job_cost_usd(started_at=None, ended_at=None, now=start, node_count=1, cpus=1, node_hourly_usd=1, node_vcpus=4)
        == 0
    )
    assert job_cost_usd(
        started_at=start,
        ended_at=start + hour,
        now=start + hour,
        node_count=1,
        cpus=1,
        node_hourly_usd=1,
        node_vcpus=None,
    ) == pytest.approx(1)


def test_the_cost_history_keeps_the_latest_point_and_thins_out_with_age():
    from lsstctl.domain.cost import with_sample

    start = datetime(2026, 12, 1, tzinfo=UTC)
    history = None
    # A month of minutes (the guard's interval), spend growing a cent a minute
    for minute in range(30 * 24 * 60):
        history = with_sample(history, start + timedelta(minutes=minute), minute / 100, 0.6)
    points = history["points"]
    assert len(points) <= 360 and history["step_seconds"] >= 30 * 24 * 3600 / 360
    assert points[0][0] == start.isoformat()  # the first measurement stays
    assert points[-1] == [(start + timedelta(minutes=30 * 24 * 60 - 1)).isoformat(), 431.99, 0.6]  # so does the latest
    times = [datetime.fromisoformat(p[0]) for p in points]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert all(g >= history["step_seconds"] for g in gaps[:-1]) and all(g > 0 for g in gaps)
    assert [p[1] for p in points] == sorted(p[1] for p in points)


def test_the_cost_history_takes_a_repeated_tick_once_and_keeps_only_the_newest_of_close_ones():
    from lsstctl.domain.cost import with_sample

    at = datetime(2026, 12, 1, tzinfo=UTC)
    one = with_sample(None, at, 1.0, 0.5)
    # The same tick delivered twice: one point
    assert with_sample(one, at, 1.0, 0.5) == one
    # An older measurement arriving late changes nothing
    assert with_sample(one, at - timedelta(minutes=1), 0.9, 0.5) == one
    # Two more within a step: the first stays, the newest replaces the one in between
    two = with_sample(with_sample(one, at + timedelta(seconds=20), 1.1, 0.5), at + timedelta(seconds=40), 1.2, 0.5)
    assert [p[1] for p in two["points"]] == [1.0, 1.2]


def _ledger(resources: list[Resource], at: datetime, budget: float = 10.0, **extra: object) -> dict:
    return {**measure(resources, at, potential_compute_usd_per_hour=0.0).to_dict(budget), **extra}


def test_an_unchanged_ledger_carried_forward_is_what_a_measurement_then_would_say():
    # A head node, a node that ended at 20 min and one that started 30 s before the measurement
    # (still inside its one-minute minimum): carried to 3 h, each bills from its own start.
    young = Resource(
        id="young", kind="instance", role="compute", type="x", hourly_usd=0.7, started_at=T0 + timedelta(seconds=90)
    )
    resources = [instance("head", 0.0416, 0, role="head"), instance("gone", 0.34, 0, ended=20), young]
    written = _ledger(resources, T0 + timedelta(minutes=2), state="ready")
    later = T0 + timedelta(hours=3)
    carried = ledger_as_of(written, later)
    fresh = _ledger(resources, later, state="ready")
    assert carried["spend_usd"] == pytest.approx(fresh["spend_usd"], abs=1e-9)
    assert carried["spend_usd"] == pytest.approx(0.0416 * 3 + 0.34 / 3 + 0.7 * (3 - 1.5 / 60), abs=1e-9)
    assert carried["measured_at"] == later.isoformat()
    assert carried["budget_used_percent"] == fresh["budget_used_percent"]
    assert carried["projected_budget_at"] == fresh["projected_budget_at"]
    assert [r["spend_usd"] for r in carried["breakdown"]] == [r["spend_usd"] for r in fresh["breakdown"]]
    # Never carried backwards
    assert ledger_as_of(written, T0) is written


def test_a_ledger_changes_with_what_bills_not_with_time():
    resources = [instance("head", 0.0416, 0, role="head"), instance("n1", 0.34, 0)]
    first = _ledger(resources, T0 + timedelta(minutes=5), state="ready", warned=[])
    same_later = _ledger(resources, T0 + timedelta(hours=2), state="ready", warned=[])
    assert not ledger_changed(first, same_later)
    assert ledger_changed(None, first) and ledger_changed({}, first)
    ended = _ledger([resources[0], instance("n1", 0.34, 0, ended=60)], T0 + timedelta(hours=2), state="ready")
    added = _ledger([*resources, instance("n2", 0.34, 0)], T0 + timedelta(hours=2), state="ready", warned=[])
    assert ledger_changed(first, {**ended, "warned": []}) and ledger_changed(first, added)
    assert ledger_changed(first, _ledger(resources, T0 + timedelta(hours=2), budget=20, state="ready", warned=[]))
    assert ledger_changed(first, {**same_later, "warned": [50]})
    assert ledger_changed(first, {**same_later, "state": "tearing_down"})
