"""The scale governor's rule (pure): caps that keep the next tick's spend ceiling under the
budget, fall as the budget runs down, hold what already bills, and stall at no node."""

from __future__ import annotations

import pytest

from lsstctl.domain.cost import SpendReport, TeardownTiming, spend_ceiling
from lsstctl.domain.governor import QueueReach, describe_caps, full_caps, govern, reach_hourly

TIMING = TeardownTiming(stop_compute_seconds=180, total_seconds=1200)
HEAD = 0.05
BIG = QueueReach("compute", 0, 15, 3.06)  # c5.18xlarge


def _govern(spend: float, budget: float = 50.0, queues: list[QueueReach] | None = None, caps_now=None):
    queues = queues or [BIG]
    return govern(
        budget_usd=budget,
        spend_usd=spend,
        base_usd_per_hour=HEAD,
        queues=queues,
        caps_now=caps_now if caps_now is not None else full_caps(queues),
        guard_interval_seconds=60,
        timing=TIMING,
    )


def _ceiling(spend: float, queues: list[QueueReach], caps) -> float:
    report = SpendReport(
        measured_at=None,
        spend_usd=spend,
        burn_usd_per_hour=0.0,  # type: ignore[arg-type]
        base_burn_usd_per_hour=HEAD,
        max_burn_usd_per_hour=HEAD + reach_hourly(queues, caps),
    )
    return spend_ceiling(report, guard_interval_seconds=60, timing=TIMING)


def test_a_full_budget_is_not_capped_and_the_cap_falls_as_it_runs_down():
    assert not _govern(0.0).capped and _govern(0.0).caps == {"compute": 15}
    caps = [_govern(spend).caps["compute"] for spend in (40, 47, 48, 49, 49.5, 49.8)]
    assert caps == sorted(caps, reverse=True) and caps[0] == 15 and caps[1] < 15 and caps[-1] == 0
    assert _govern(47).capped and describe_caps(_govern(47).caps, [BIG]).startswith("capped at ")


@pytest.mark.parametrize(
    "spend, stalled",
    [(0.0, False), (30.0, False), (45.0, False), (48.5, False), (49.0, False), (49.3, True), (49.6, True)],
)
def test_the_next_ticks_ceiling_stays_under_the_budget_with_the_caps_chosen(spend, stalled):
    """Whatever the spend, the current caps running flat out for one interval, then the new
    caps' whole reach through the window: still under the budget; one node more would not be.
    Stalled: not even one node fits."""
    now = _govern(spend - 5 if spend >= 5 else 0.0).caps  # caps from a pass before
    chosen = _govern(spend, caps_now=now)
    after_interval = spend + (HEAD + reach_hourly([BIG], now)) * 60 / 3600
    assert chosen.stalled is stalled
    if stalled:
        assert chosen.caps == {"compute": 0}
    else:
        assert _ceiling(after_interval, [BIG], chosen.caps) < 50.0
    if chosen.caps["compute"] < 15:
        assert _ceiling(after_interval, [BIG], {"compute": chosen.caps["compute"] + 1}) >= 50.0


def test_nodes_billing_above_the_cap_count_until_the_next_tick_not_in_the_cap():
    running = QueueReach("compute", 0, 15, 3.06, running_hourly=10 * 3.06)
    assert running.reach_hourly(2) == pytest.approx(10 * 3.06)
    assert running.reach_hourly(12) == pytest.approx(12 * 3.06)
    # Capped at 2 with ten nodes finishing their jobs: they burn until the next tick, so less
    # is left for the nodes after it; the cap itself is for the fleet once they drained.
    finishing = _govern(48.0, queues=[running], caps_now={"compute": 2})
    drained = _govern(48.0, caps_now={"compute": 2})
    assert finishing.caps["compute"] < drained.caps["compute"]
    assert finishing.reach_usd_per_hour == pytest.approx(finishing.caps["compute"] * 3.06)


def test_no_node_left_is_stalled_unless_nodes_still_bill_or_static_ones_exist():
    assert _govern(49.95).stalled and _govern(49.95).caps == {"compute": 0}
    assert not _govern(49.95, queues=[QueueReach("compute", 0, 15, 3.06, running_hourly=3.06)]).stalled
    paused = _govern(10.0, queues=[QueueReach("compute", 0, 0, 3.06)])  # its owner limited it to 0
    assert paused.caps == {"compute": 0} and not paused.stalled
    static = _govern(49.95, queues=[QueueReach("compute", 2, 15, 3.06)])
    assert static.caps == {"compute": 2} and not static.stalled  # never below min_nodes: the budget rule ends it


def test_queues_are_filled_in_turn():
    queues = [QueueReach("cpu", 0, 10, 1.0), QueueReach("gpu", 0, 10, 1.0)]
    caps = _govern(49.0, queues=queues, caps_now={"cpu": 10, "gpu": 10}).caps
    assert abs(caps["cpu"] - caps["gpu"]) <= 1 and 0 < caps["cpu"] < 10
    assert "cpu" in describe_caps(caps, queues) and "gpu" in describe_caps(caps, queues)
