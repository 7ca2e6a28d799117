"""Quotes before launch (GET /quote): the same numbers the guard meters and admission uses."""

from __future__ import annotations

import pytest

from lsstctl import wiring
from lsstctl.domain.presets import PRESETS
from lsstctl.errors import ValidationError
from lsstctl.services import ledgers, quotes
from tests.integration.plane import ALICE, cid, ready, tick
from tests.integration.test_guard import CapHead, answering, publish_busy


@pytest.mark.parametrize(("nodes", "hours"), [(2, 3), (0, 2)])
def test_a_quote_matches_what_the_ledger_records_over_those_hours(plane, nodes, hours):
    # Given the quote for the small preset with some nodes in use for some hours
    deps = wiring.deps()
    quote = quotes.quote(deps, ALICE, preset="small", hours=hours, nodes=nodes)
    # When that cluster runs that long with that many nodes (static ones), metered by the guard
    small = PRESETS["small"].spec_fields()
    small["queues"][0].update(min_nodes=nodes)
    name = f"quoted-{nodes}"
    ready(name, plane, preset="small", **small, budget_usd=500, idle_minutes=24 * 60, max_lifetime_hours=24)
    tick(plane)
    before = ledgers.current(deps, cid(name), 1)["spend_usd"]
    for _ in range(hours * 60):
        publish_busy(name, plane)
        tick(plane)
    spent = ledgers.current(deps, cid(name), 1)["spend_usd"] - before
    # Then the ledger's spend over those hours is the quote's, within 2 %
    assert spent == pytest.approx(quote["run_usd"], rel=0.02), (spent, quote)
    assert quote["in_use_usd_per_hour"] == pytest.approx(
        quote["at_rest_usd_per_hour"] + nodes * quote["queues"][0]["node_usd_per_hour"], abs=1e-4
    )


def test_a_quote_tells_admission_control_s_verdict(plane):
    deps = wiring.deps()
    roomy = quotes.quote(deps, ALICE, preset="medium", hours=8, budget_usd=1000)
    assert roomy["budget"] == {**roomy["budget"], "admitted": True, "capped": False, "covers_run": True}
    assert (
        roomy["nodes"] == roomy["max_nodes"] == 10 and roomy["full_size_usd_per_hour"] == roomy["in_use_usd_per_hour"]
    )
    # A budget for part of the fleet: launched capped, as POST /clusters would
    tight = quotes.quote(deps, ALICE, preset="large", hours=8, budget_usd=1)
    assert tight["budget"]["admitted"] and tight["budget"]["capped"], tight["budget"]
    assert tight["budget"]["reason"].startswith("capped ") and not tight["budget"]["covers_run"]
    assert tight["budget"]["caps"]["compute"] < 32
    # A budget for no node at all: refused, with admission control's reason
    refused = quotes.quote(deps, ALICE, preset="large", hours=8, budget_usd=0.01)
    assert refused["budget"]["admitted"] is False and "raise the budget" in refused["budget"]["reason"]
    # Spot presets are quoted at most at on-demand
    assert quotes.quote(deps, ALICE, preset="small-spot", hours=1)["pricing"] == "spot at most"
    # Bad input names the field
    for kwargs, field in (
        ({"preset": "huge", "hours": 1}, "preset"),
        ({"preset": "small", "hours": 0}, "hours"),
        ({"preset": "small", "hours": 1000}, "hours"),
        ({"preset": "small", "hours": 1, "nodes": 5}, "nodes"),
        ({"preset": "small", "hours": 1, "nodes": -1}, "nodes"),
        ({"preset": "small", "hours": 1, "budget_usd": 0}, "budget_usd"),
    ):
        with pytest.raises(ValidationError) as raised:
            quotes.quote(deps, ALICE, **kwargs)
        assert raised.value.field == field, kwargs


@pytest.mark.parametrize("budget", [0.03, 0.05, 0.08, 0.12, 0.2])
def test_a_budget_the_quote_admits_is_not_ended_by_the_guards_first_pass(plane, monkeypatch, budget):
    # Given head nodes that apply the governor's caps, and a budget admission control would
    # launch (perhaps capped), by the quote
    answering(monkeypatch, CapHead(wiring.deps().runner))
    deps = wiring.deps()
    verdict = quotes.quote(deps, ALICE, preset="small", hours=1, budget_usd=budget)["budget"]
    if not verdict["admitted"]:
        # Then the launch itself is refused with the same reason
        with pytest.raises(ValidationError) as refused:
            ready(f"b-{int(budget * 100)}", plane, preset="small", **PRESETS["small"].spec_fields(), budget_usd=budget)
        assert refused.value.message == verdict["reason"]
        return
    # When it is launched and the guard makes its first pass
    name = f"b-{int(budget * 100)}"
    ready(name, plane, preset="small", **PRESETS["small"].spec_fields(), budget_usd=budget)
    summary = tick(plane)
    # Then the guard does not end it for its budget (admission reserved what the guard meters:
    # the head node and the shared storage too)
    assert cid(name) not in summary["teardowns"], (verdict, summary)


def test_a_spec_is_quoted_as_its_preset_would_be_and_its_own_budget_judged(plane):
    deps = wiring.deps()
    small = PRESETS["small"].spec_fields()
    by_preset = quotes.quote(deps, ALICE, preset="small", hours=5, nodes=3, budget_usd=40)
    by_spec = quotes.quote(deps, ALICE, spec={**small, "budget_usd": 40}, hours=5, nodes=3)
    assert {**by_spec, "preset": "small"} == by_preset and by_spec["preset"] is None
    # A spec of its own: dearer nodes, its budget judged (a $1 budget for 2 c5.18xlarge is capped or refused)
    own = {"queues": [{"name": "big", "instance_types": ["c5.18xlarge"], "max_nodes": 2}], "budget_usd": 1}
    answer = quotes.quote(deps, ALICE, spec=own, hours=2)
    assert answer["queues"] == [{"queue": "big", "nodes": 2, "max_nodes": 2, "node_usd_per_hour": 3.06}]
    assert answer["budget"]["budget_usd"] == 1 and not answer["budget"]["covers_run"]
    # A bad spec names the field inside it; a preset and a spec at once, or neither, is refused
    with pytest.raises(ValidationError) as raised:
        quotes.quote(
            deps, ALICE, spec={"queues": [{"name": "q", "instance_types": ["c5.large"], "max_nodes": 0}]}, hours=1
        )
    assert raised.value.field == "spec.queues.0.max_nodes"
    for kwargs in ({"preset": "small", "spec": own}, {}):
        with pytest.raises(ValidationError) as raised:
            quotes.quote(deps, ALICE, hours=1, **kwargs)
        assert raised.value.field == "preset"
