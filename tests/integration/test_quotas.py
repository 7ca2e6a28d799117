"""Per-owner quotas through the API (answers checked against openapi.yaml): live clusters,
compute nodes at full size and budgets, the deployment's defaults unless an admin set them."""

from __future__ import annotations

import pytest

from tests.integration.api_contract import OTHER, OWNER, Api, cluster_spec

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")
ADMIN = "admin"


def launch(api: Api, name: str, **overrides) -> tuple[int, dict]:
    reply = api.call("POST", "/clusters", body=cluster_spec(name, **overrides))
    return reply.status, reply.body


def test_defaults_hold_until_an_admin_sets_a_quota(api: Api) -> None:
    # Given no quota set, then alice sees the deployment's defaults and nothing in use
    view = api.call("GET", "/quotas/{owner}", owner=OWNER).body
    assert view["quota"]["live_clusters"] == 10 and view["quota"]["set_by"] is None
    assert view["usage"] == {"live_clusters": 0, "total_nodes": 0, "total_budget_usd": 0, "month_committed_usd": 0}
    assert view["quota"]["monthly_budget_usd"] == 5000
    # When alice (not an admin) sets her own quota, then 403 and nothing changes
    assert api.call("PUT", "/quotas/{owner}", owner=OWNER, body={"live_clusters": 50}).status == 403
    assert api.call("GET", "/quotas/{owner}", owner=OWNER).body["quota"]["live_clusters"] == 10
    # And bob cannot even see it
    assert api.call("GET", "/quotas/{owner}", owner=OWNER, who=OTHER).status == 404
    # When an admin sets one limit, then the others keep their value
    view = api.call("PUT", "/quotas/{owner}", owner=OWNER, body={"live_clusters": 1}, who=ADMIN).body
    assert (view["quota"]["live_clusters"], view["quota"]["total_nodes"]) == (1, 256)
    assert view["quota"]["set_by"].endswith("/admin")
    # Bad values are refused naming the field
    bad = api.call("PUT", "/quotas/{owner}", owner=OWNER, body={"live_clusters": -1}, who=ADMIN)
    assert (bad.status, bad.body["error"]["field"]) == (400, "live_clusters")
    bad = api.call("PUT", "/quotas/{owner}", owner="Not-An-Owner", body={"live_clusters": 1}, who=ADMIN)
    assert (bad.status, bad.body["error"]["field"]) == (400, "owner")


def test_a_launch_beyond_the_quota_is_refused_and_creates_nothing(api: Api) -> None:
    from lsstctl import wiring
    from lsstctl.domain.models import ClusterState, cluster_id
    from lsstctl.services.clusters import transition

    api.call(
        "PUT",
        "/quotas/{owner}",
        owner=OWNER,
        body={"live_clusters": 1, "total_nodes": 3, "total_budget_usd": 30},
        who=ADMIN,
    )
    # Given one live cluster (2 nodes, $20)
    assert launch(api, "first")[0] == 202
    # When the same launch is repeated, then it converges (its own cluster is not counted)
    assert launch(api, "first")[0] == 202
    # When a second cluster is launched, then 403 quota_exceeded naming the limit
    status, body = launch(api, "second", budget_usd=5)
    assert (status, body["error"]["code"], body["error"]["field"]) == (403, "quota_exceeded", "name")
    assert body["error"]["details"] == {"limit": "live_clusters", "quota": 1, "used": 1, "requested": 1}
    assert api.call("GET", "/clusters/{name}", name="second").status == 404  # nothing was created
    # When the first is deleted, then its nodes and budget are free again
    for state in (ClusterState.TEARING_DOWN, ClusterState.DELETED):
        transition(wiring.deps(), cluster_id(OWNER, "first"), state, "test")
    # ... but a cluster bigger than the node quota, or over the budget quota, is refused
    api.call("PUT", "/quotas/{owner}", owner=OWNER, body={"live_clusters": 5}, who=ADMIN)
    queues = [{"name": "compute", "instance_types": ["c5.large"], "min_nodes": 0, "max_nodes": 4}]
    status, body = launch(api, "wide", queues=queues)
    assert (status, body["error"]["field"], body["error"]["details"]["limit"]) == (403, "queues", "total_nodes")
    status, body = launch(api, "rich", budget_usd=31)
    assert (status, body["error"]["field"]) == (403, "budget_usd")
    assert launch(api, "fits", budget_usd=30)[0] == 202
    usage = api.call("GET", "/quotas/{owner}", owner=OWNER).body["usage"]
    # (the deleted "first" never measured any spend: only the live budget is committed this month)
    assert usage == {"live_clusters": 1, "total_nodes": 2, "total_budget_usd": 30, "month_committed_usd": 30}
    # Another owner's clusters never count against alice
    assert api.call("GET", "/quotas/{owner}", owner=OTHER, who=OTHER).body["usage"]["live_clusters"] == 0


def test_an_owners_monthly_budget_holds_across_five_clusters_and_their_relaunches(api: Api) -> None:
    """$100 a month for alice: five $20 clusters fit; a sixth, a relaunch after one ended at
    99.9 % of its budget, or a raised budget is refused with what is left; a new month starts
    afresh. Spend can never pass the ceiling: each cluster is held under its budget."""
    from lsstctl import wiring
    from lsstctl.domain.models import ClusterState, cluster_id
    from lsstctl.services.clusters import transition

    api.call("PUT", "/quotas/{owner}", owner=OWNER, body={"monthly_budget_usd": 100}, who=ADMIN)
    for i in range(5):
        assert launch(api, f"c{i}", budget_usd=20)[0] == 202
    status, body = launch(api, "sixth", budget_usd=20)
    assert (status, body["error"]["code"], body["error"]["field"]) == (403, "quota_exceeded", "budget_usd")
    assert body["error"]["details"]["left"] == 0 and "$0.00 is left" in body["error"]["message"]
    # c0 ends at 99.9 % of its budget (its ledger says so): the relaunch has only $0.02 left
    deps = wiring.deps()
    c0 = deps.store.get_cluster(cluster_id(OWNER, "c0"))
    deps.store.put_ledger(
        c0.id,
        c0.generation,
        OWNER,
        {
            "cluster_id": c0.id,
            "generation": c0.generation,
            "owner": OWNER,
            "spend_usd": 19.98,
            "burn_usd_per_hour": 0.0,
            "measured_at": deps.clock().isoformat(),
        },
    )
    for state in (ClusterState.TEARING_DOWN, ClusterState.DELETED):
        transition(deps, c0.id, state, "test")
    status, body = launch(api, "c0", budget_usd=20)
    assert status == 403 and body["error"]["details"]["left"] == pytest.approx(0.02)
    assert api.call("GET", "/quotas/{owner}", owner=OWNER).body["usage"]["month_committed_usd"] == pytest.approx(99.98)
    # Raising a live cluster's budget is held to the same ceiling
    raised = api.call("PATCH", "/clusters/{name}", name="c1", body={"budget_usd": 25})
    assert raised.status == 403 and raised.body["error"]["details"]["limit"] == "monthly_budget_usd"
    # Next month, what was spent last month no longer counts (the live budgets still do)
    from datetime import timedelta

    from lsstctl.emulator.clock import VirtualClock

    clock = VirtualClock()
    clock.advance(timedelta(days=32).total_seconds())
    wiring.use_clock(clock)
    try:
        assert wiring.deps().store.get_cluster(c0.id).state == ClusterState.DELETED
        from lsstctl.services.quotas import committed_this_month

        assert committed_this_month(wiring.deps(), OWNER) == pytest.approx(80)
    finally:
        wiring.use_clock(None)


def test_a_project_budget_holds_across_five_clusters_of_its_members(api: Api) -> None:
    """A $100 grant shared by alice and bob: five $20 clusters between them fit; a sixth, a
    raised budget or a relaunch after one ended at 99.9 % is refused with what is left; a
    non-member cannot launch in it; the project's usage says what is committed; fixed dates
    close it outside them. Clusters outside the project do not count against it."""
    from lsstctl import wiring
    from lsstctl.domain.models import ClusterState, cluster_id
    from lsstctl.services.clusters import transition

    made = api.call(
        "PUT", "/projects/{name}", name="grant", body={"members": [OWNER, OTHER], "budget_usd": 100}, who=ADMIN
    )
    assert made.status == 200 and made.body["usage"]["left_usd"] == 100
    for i in range(3):
        assert launch(api, f"a{i}", budget_usd=20, project="grant")[0] == 202
    for i in range(2):
        reply = api.call("POST", "/clusters", body=cluster_spec(f"b{i}", budget_usd=20, project="grant"), who=OTHER)
        assert reply.status == 202, reply.body
    assert launch(api, "own", budget_usd=20)[0] == 202  # alice's own money, not the grant's
    status, body = launch(api, "sixth", budget_usd=5, project="grant")
    assert (status, body["error"]["code"], body["error"]["field"]) == (403, "quota_exceeded", "budget_usd")
    assert body["error"]["details"]["limit"] == "project_budget_usd" and "$0.00 is left" in body["error"]["message"]
    raised = api.call("PATCH", "/clusters/{name}", name="a1", body={"budget_usd": 25})
    assert raised.status == 403 and raised.body["error"]["details"]["limit"] == "project_budget_usd"
    # a0 ends at 99.9 % of its budget: a relaunch in the grant has $0.02 left
    deps = wiring.deps()
    a0 = deps.store.get_cluster(cluster_id(OWNER, "a0"))
    deps.store.put_ledger(
        a0.id,
        a0.generation,
        OWNER,
        {
            "cluster_id": a0.id,
            "generation": a0.generation,
            "owner": OWNER,
            "project": "grant",
            "spend_usd": 19.98,
            "burn_usd_per_hour": 0.0,
            "measured_at": deps.clock().isoformat(),
        },
    )
    for state in (ClusterState.TEARING_DOWN, ClusterState.DELETED):
        transition(deps, a0.id, state, "test")
    status, body = launch(api, "a0", budget_usd=20, project="grant")
    assert status == 403 and body["error"]["details"]["left"] == pytest.approx(0.02)
    view = api.call("GET", "/projects/{name}", name="grant").body
    assert view["usage"]["committed_usd"] == pytest.approx(99.98) and view["project"]["members"] == sorted(
        [OTHER, OWNER]
    )
    assert [p["name"] for p in api.call("GET", "/projects", who=OTHER).body["projects"]] == ["grant"]
    # Not a member: refused, naming the field; nobody else sees it
    api.call("PUT", "/projects/{name}", name="other-grant", body={"members": [OTHER], "budget_usd": 100}, who=ADMIN)
    status, body = launch(api, "outside", budget_usd=5, project="other-grant")
    assert (status, body["error"]["field"]) == (400, "project")
    assert api.call("GET", "/projects/{name}", name="other-grant").status == 404
    # Fixed dates: the grant is closed outside them
    api.call(
        "PUT",
        "/projects/{name}",
        name="old-grant",
        body={"members": [OWNER], "budget_usd": 100, "starts": "2020-01-01", "ends": "2020-06-01"},
        who=ADMIN,
    )
    status, body = launch(api, "late", budget_usd=5, project="old-grant")
    assert (status, body["error"]["field"]) == (400, "project") and "not now" in body["error"]["message"]
    bad = api.call(
        "PUT",
        "/projects/{name}",
        name="grant",
        body={"members": [OWNER], "budget_usd": 1, "starts": "2026-01-01"},
        who=ADMIN,
    )
    assert bad.status == 400
