"""API behaviour beyond the document: ownership, idempotent replays, reused names.
Every answer is still checked against openapi.yaml by the harness."""

from __future__ import annotations

import boto3
import pytest

from lsstctl import wiring
from lsstctl.domain.models import ClusterState
from lsstctl.services.clusters import transition
from tests.integration.api_contract import ADMIN, CLUSTER, CLUSTER_ID, JOB, OTHER, OWNER, cluster_spec, make_ready

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")


def executions(kind: str) -> list[str]:
    sfn = boto3.client("stepfunctions")
    machine = next(
        m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"] if m["name"] == f"lsstctl-{kind}"
    )
    return [e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]]


def test_owners_see_their_own_and_admins_see_all(api):
    api.call("POST", "/clusters", body=cluster_spec("alices"), who=OWNER)
    api.call("POST", "/clusters", body=cluster_spec("bobs"), who=OTHER)
    assert [c["name"] for c in api.call("GET", "/clusters", who=OWNER).body["clusters"]] == ["alices"]
    assert api.call("GET", "/clusters/{name}", who=OTHER, name="alices").status == 404
    assert api.call("DELETE", "/clusters/{name}", who=OTHER, name="alices").status == 404
    assert api.call("POST", "/clusters/{name}/jobs", body=JOB, who=OTHER, name="alices").status == 404
    assert sorted(c["name"] for c in api.call("GET", "/clusters", who=ADMIN).body["clusters"]) == ["alices", "bobs"]
    # Only an admin may launch for someone else.
    assert api.call("POST", "/clusters", body=cluster_spec("forbob", owner=OTHER), who=OWNER).status == 403
    assert (
        api.call("POST", "/clusters", body=cluster_spec("forbob", owner=OTHER), who=ADMIN).body["cluster"]["owner"]
        == OTHER
    )


def test_a_replayed_launch_returns_the_first_answer_and_starts_nothing_new(api):
    first = api.call("POST", "/clusters", body=cluster_spec(), key="k-1")
    again = api.call("POST", "/clusters", body=cluster_spec(), key="k-1")
    assert first.status == again.status == 202 and first.body == again.body
    # Without a key, the same request converges on the same cluster instead of failing.
    plain = api.call("POST", "/clusters", body=cluster_spec())
    assert plain.status == 202 and plain.body["cluster"]["generation"] == 1
    assert executions("launch") == [f"launch-{CLUSTER_ID}-g1"]


def test_a_repeated_delete_starts_one_teardown(api):
    api.call("POST", "/clusters", body=cluster_spec())
    make_ready(CLUSTER)
    assert api.call("DELETE", "/clusters/{name}", name=CLUSTER).status == 202
    assert api.call("DELETE", "/clusters/{name}", name=CLUSTER).status == 202
    assert api.call("DELETE", "/clusters/{name}", name=CLUSTER, key="d-1").status == 202
    assert executions("teardown") == [f"teardown-{CLUSTER_ID}-g1-a1"]
    assert api.call("GET", "/clusters/{name}", name=CLUSTER).body["state"] == "tearing_down"


def test_names_are_per_owner_and_another_owners_cluster_is_missing_not_a_conflict(api):
    api.call("POST", "/clusters", body=cluster_spec(), who=OWNER)
    make_ready(CLUSTER)
    job = api.call("POST", "/clusters/{name}/jobs", body=JOB, who=OWNER, name=CLUSTER).body["job"]
    # When bob launches a cluster under the same name while alice's is live
    bobs = api.call("POST", "/clusters", body=cluster_spec(), who=OTHER)
    # Then he gets a cluster of his own, not a 409 that would tell him alice's exists
    assert bobs.status == 202 and bobs.body["cluster"]["generation"] == 1
    assert bobs.body["cluster"]["owner"] == OTHER and bobs.body["cluster"]["id"] != CLUSTER_ID
    assert sorted(executions("launch")) == sorted(
        [f"launch-{CLUSTER_ID}-g1", f"launch-{bobs.body['cluster']['id']}-g1"]
    )
    # And each owner sees only theirs, jobs included
    assert api.call("GET", "/clusters/{name}", who=OWNER, name=CLUSTER).body["state"] == "ready"
    assert api.call("GET", "/clusters/{name}", who=OTHER, name=CLUSTER).body["state"] == "requested"
    assert api.call("GET", "/clusters/{name}/jobs", who=OTHER, name=CLUSTER).body["jobs"] == []
    assert (
        api.call("GET", "/clusters/{name}/jobs/{job_id}", who=OTHER, name=CLUSTER, job_id=job["job_id"]).status == 404
    )
    assert (
        api.call("GET", "/clusters/{name}/jobs/{job_id}", who=OWNER, name=CLUSTER, job_id=job["job_id"]).status == 200
    )
    # Naming the other owner is an admin's power: for anyone else it is a 404, never a 403 or 409
    for method, route in (
        ("GET", "/clusters/{name}"),
        ("DELETE", "/clusters/{name}"),
        ("GET", "/clusters/{name}/jobs"),
    ):
        assert api.call(method, route, who=OTHER, name=CLUSTER, query={"owner": OWNER}).status == 404
    assert api.call("GET", "/clusters/{name}", who=OWNER, name=CLUSTER).body["state"] == "ready"
    # An admin names the owner; without one he names his own (he has none)
    assert api.call("GET", "/clusters/{name}", who=ADMIN, name=CLUSTER).status == 404
    seen = api.call("GET", "/clusters/{name}", who=ADMIN, name=CLUSTER, query={"owner": OWNER})
    assert seen.status == 200 and seen.body["id"] == CLUSTER_ID and seen.body["owner"] == OWNER
    listed = api.call("GET", "/clusters/{name}/jobs", who=ADMIN, name=CLUSTER, query={"owner": OWNER}).body["jobs"]
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    deleted = api.call("DELETE", "/clusters/{name}", who=ADMIN, name=CLUSTER, query={"owner": OWNER})
    assert deleted.status == 202 and deleted.body["status_url"] == f"/clusters/{CLUSTER}?owner={OWNER}"
    assert api.call("GET", "/clusters/{name}", who=OTHER, name=CLUSTER).body["state"] == "requested"


def test_a_relaunched_name_does_not_inherit_its_earlier_generations_jobs(api):
    api.call("POST", "/clusters", body=cluster_spec(), who=OWNER)
    make_ready(CLUSTER)
    job = api.call("POST", "/clusters/{name}/jobs", body=JOB, who=OWNER, name=CLUSTER).body["job"]
    for state in (ClusterState.TEARING_DOWN, ClusterState.DELETED):
        transition(wiring.deps(), CLUSTER_ID, state, "test")
    relaunched = api.call("POST", "/clusters", body=cluster_spec(), who=OWNER)
    assert relaunched.status == 202 and relaunched.body["cluster"]["generation"] == 2
    make_ready(CLUSTER)
    assert api.call("GET", "/clusters/{name}/jobs", who=OWNER, name=CLUSTER).body["jobs"] == []
    # The earlier job is still hers by its id (its results outlive the cluster)
    earlier = api.call("GET", "/clusters/{name}/jobs/{job_id}", who=OWNER, name=CLUSTER, job_id=job["job_id"])
    assert earlier.status == 200 and earlier.body["generation"] == 1


def test_status_urls_include_the_stage_the_caller_used(api, monkeypatch):
    # Behind API Gateway's default URL the path the caller used starts with the stage.
    from chalicelib import routes

    real = routes._url.__globals__["api"]

    class Staged:
        def __getattr__(self, name):
            return getattr(real, name)

        @property
        def current_request(self):
            request = real.current_request
            request.context = {**(request.context or {}), "path": "/api" + request.path}
            return request

    monkeypatch.setitem(routes._url.__globals__, "api", Staged())
    reply = api.call("POST", "/clusters", body=cluster_spec())
    assert reply.body["status_url"] == f"/api/clusters/{CLUSTER}"
    assert {k.lower(): v for k, v in reply.headers.items()}["location"] == f"/api/clusters/{CLUSTER}"


def test_a_broken_deployment_is_a_500_not_the_callers_fault(api, monkeypatch):
    monkeypatch.setenv("LSSTCTL_CONFIG_VALIDATION", "bogus")
    wiring.reset()
    reply = api.call("GET", "/clusters")
    assert reply.status == 500 and reply.body["error"]["code"] == "internal_error"
    assert "bogus" not in str(reply.body)  # internals stay in the log


def test_a_live_cluster_takes_a_new_budget_lifetime_and_idle_threshold(api):
    """PATCH: checked as a launch, recorded, idempotent, the idle alarm follows; another
    owner's cluster is missing; bad values name their field; a cluster going away is a 409."""
    launched = api.call("POST", "/clusters", body=cluster_spec(budget_usd=50), who=OWNER).body["cluster"]
    make_ready(CLUSTER)
    change = {"budget_usd": 80, "max_lifetime_hours": 48, "idle_minutes": 20}
    first = api.call("PATCH", "/clusters/{name}", body=change, name=CLUSTER, key="p-1")
    assert first.status == 200
    spec = first.body["cluster"]["spec"]
    assert (spec["budget_usd"], spec["max_lifetime_hours"], spec["idle_minutes"]) == (80, 48, 20)
    assert first.body["cluster"]["changes"][0]["fields"] == {
        "budget_usd": [launched["spec"]["budget_usd"], 80],
        "idle_minutes": [launched["spec"]["idle_minutes"], 20],
        "max_lifetime_hours": [launched["spec"]["max_lifetime_hours"], 48],
    }
    assert first.body["cluster"]["changes"][0]["by"] == OWNER
    # The same request again (a retry, with or without its key) records nothing more.
    assert api.call("PATCH", "/clusters/{name}", body=change, name=CLUSTER, key="p-1").body == first.body
    assert len(api.call("PATCH", "/clusters/{name}", body=change, name=CLUSTER).body["cluster"]["changes"]) == 1
    alarm = boto3.client("cloudwatch").describe_alarms(AlarmNames=[f"lsstctl-idle-{CLUSTER_ID}"])["MetricAlarms"][0]
    assert alarm["EvaluationPeriods"] == 20
    # Refusals name what is wrong.
    assert api.call("PATCH", "/clusters/{name}", body=change, name=CLUSTER, who=OTHER).status == 404
    for body, field in (
        ({}, "body"),
        ({"budget_usd": -1}, "budget_usd"),
        ({"idle_minutes": 2}, "idle_minutes"),
        ({"queues": []}, "queues"),
        ({"budget_usd": None}, "body"),
        ({"budget_usd": 0.01}, "budget_usd"),
    ):
        refused = api.call("PATCH", "/clusters/{name}", body=body, name=CLUSTER)
        assert refused.status == 400 and refused.body["error"]["field"] == field, (body, refused.body)
    over = api.call("PATCH", "/clusters/{name}", body={"budget_usd": 99_999}, name=CLUSTER)
    assert over.status == 403 and over.body["error"]["code"] == "quota_exceeded"
    by_admin = api.call(
        "PATCH", "/clusters/{name}", body={"budget_usd": 70}, name=CLUSTER, who=ADMIN, query={"owner": OWNER}
    )
    assert by_admin.status == 200 and by_admin.body["cluster"]["changes"][-1]["by"] == ADMIN
    api.call("DELETE", "/clusters/{name}", name=CLUSTER)
    assert api.call("PATCH", "/clusters/{name}", body={"budget_usd": 90}, name=CLUSTER).status == 409
