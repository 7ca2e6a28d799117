"""Contract test: openapi.yaml describes the HTTP API as it is.

Three promises are kept here:
  - the document is valid OpenAPI 3.0;
  - it lists exactly the routes registered on the Chalice app (no more, no fewer);
  - what real calls answer (routes driven in-process with chalice.test.Client, AWS played
    by moto) is documented: the status for that path and method, the body's schema, the
    required headers. A status the document does not list fails the test.

Response schemas are checked closed: an object schema with `properties` and no explicit
`additionalProperties` is treated as `additionalProperties: false`, so a field must be
documented before it ships. (The document itself stays open, for clients' sake.)
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from openapi_spec_validator import validate as validate_openapi

from lsstctl.domain.models import cluster_id
from tests.integration.api_contract import (
    ADMIN,
    CLUSTER,
    CLUSTER_ID,
    JOB,
    OTHER,
    OWNER,
    REGION,
    Api,
    Contract,
    cluster_spec,
    make_ready,
    operations,
    slack_signed,
)

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")


# the document itself ---------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_0(spec: dict[str, Any]) -> None:
    # Given openapi.yaml, when the OpenAPI 3.0 validator reads it, then it raises nothing.
    assert spec["openapi"].startswith("3.0.")
    validate_openapi(spec)


def test_the_document_lists_exactly_the_registered_routes(spec: dict[str, Any], chalice_app: Any) -> None:
    # Given the routes registered on the Chalice app (through its blueprint)
    registered = {(path, method) for path, methods in chalice_app.routes.items() for method in methods}
    # When the document's operations are listed
    documented = {(route, method) for route, method, _ in [*operations(spec), *operations(spec, signed_by_slack=True)]}
    # Then they are the same set
    assert documented - registered == set(), "documented but not routed"
    assert registered - documented == set(), "routed but not documented"
    assert len(documented) == 32


def test_every_operation_documents_identity_idempotency_and_errors(spec: dict[str, Any]) -> None:
    for route, method, operation in [*operations(spec), *operations(spec, signed_by_slack=True)]:
        responses = operation["responses"]
        # Every call can fail authentication (locally), authorization (API Gateway) or unexpectedly
        assert {"401", "403", "500"} <= set(responses), f"{method} {route}"
        params = {p.get("$ref", "").rsplit("/", 1)[-1] for p in operation.get("parameters", [])}
        if method in {"POST", "DELETE"} and not slack_signed(operation):
            # (Slack's repeats are recognised by their trigger id, not by this header.)
            assert "IdempotencyKey" in params, f"{method} {route} takes no Idempotency-Key"
        if "202" in responses:
            assert "Location" in responses["202"].get("headers", {}), f"{method} {route} 202 without Location"
        if route.startswith("/clusters/") or route.startswith("/users/"):
            assert "404" in responses, f"{method} {route}"
    assert spec["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert spec["components"]["securitySchemes"]["localPrincipal"]["name"] == "X-Lsst-Principal"


def test_the_document_examples_match_their_schemas(spec: dict[str, Any], contract: Contract) -> None:
    # Given each request body example, then the body schema it illustrates accepts it.
    examples = [(route, method, op["requestBody"]) for route, method, op in operations(spec) if "requestBody" in op]
    assert len(examples) == 9
    for route, method, request_body in examples:
        content = request_body["content"]["application/json"]
        for example in (
            [content["example"]] if "example" in content else [e["value"] for e in content["examples"].values()]
        ):
            contract.check_request(route, method, example)


def test_the_cluster_view_is_the_cluster_plus_its_cost(spec: dict[str, Any]) -> None:
    # Response objects are closed, so GET /clusters/{name} restates Cluster instead of
    # composing it (allOf would close each part against the other): they must not drift.
    schemas = spec["components"]["schemas"]
    cluster, view = schemas["Cluster"], schemas["ClusterView"]
    assert {k: v for k, v in view["properties"].items() if k != "cost"} == cluster["properties"]
    assert view["required"] == cluster["required"] + ["cost"]
    assert view["properties"]["cost"] == {"$ref": "#/components/schemas/ClusterCostSummary"}


def test_the_schema_examples_match_their_schemas(spec: dict[str, Any], contract: Contract) -> None:
    # Given every component schema with an example, then the (closed) schema accepts it.
    examples = {name: s["example"] for name, s in spec["components"]["schemas"].items() if "example" in s}
    assert {"ClusterLedger", "ClusterCostPending", "Error"} <= set(examples)
    for name, example in examples.items():
        assert contract.schema_errors(name, example) == [], name


def test_the_cost_shapes_are_told_apart(contract: Contract) -> None:
    ledger = contract.spec["components"]["schemas"]["ClusterLedger"]["example"]
    pending = contract.spec["components"]["schemas"]["ClusterCostPending"]["example"]
    # Given the ledger and the not-yet-measured placeholder, then each is a ClusterCost
    assert contract.schema_errors("ClusterCost", ledger) == []
    assert contract.schema_errors("ClusterCost", pending) == []
    # When the placeholder claims spend or resources, or the ledger lacks its burn, then neither fits
    assert contract.schema_errors("ClusterCost", {**pending, "spend_usd": 1.5})
    assert contract.schema_errors("ClusterCost", {**pending, "breakdown": ledger["breakdown"]})
    assert contract.schema_errors("ClusterCost", {k: v for k, v in ledger.items() if k != "burn_usd_per_hour"})
    # When a breakdown entry carries an undocumented field or an unknown kind, then it fails
    item = ledger["breakdown"][0]
    assert contract.schema_errors("SpendItem", {**item, "size_gib": 100})
    assert contract.schema_errors("SpendItem", {**item, "kind": "snapshot"})


def test_the_checker_fails_on_what_the_document_does_not_promise(contract: Contract) -> None:
    user = {
        "name": "alice",
        "owner": "alice",
        "iam_user_name": "lsst-alice",
        "policy_name": "p",
        "iam_user_arn": "arn:aws:iam::123456789012:user/lsstctl/lsst-alice",
        "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:lsstctl/users/alice",
        "created_at": "2026-05-02T12:00:00Z",
    }
    # Given a well-formed answer, then it passes
    contract.check_response("/users", "GET", 200, {}, {"users": [user]})
    # When the status is not documented for that path and method, then the check fails
    with pytest.raises(pytest.fail.Exception, match="does not document"):
        contract.check_response("/users", "GET", 404, {}, {"error": {"code": "not_found", "message": "x"}})
    with pytest.raises(pytest.fail.Exception, match="does not document"):
        contract.check_response("/users", "PUT", 200, {}, {})
    # When a field is undocumented, mistyped, or the 202's Location header is missing, then it fails
    with pytest.raises(AssertionError, match="install_command_id"):
        contract.check_response("/users", "GET", 200, {}, {"users": [{**user, "install_command_id": "c"}]})
    with pytest.raises(AssertionError, match="created_at"):
        contract.check_response("/users", "GET", 200, {}, {"users": [{**user, "created_at": "yesterday"}]})
    with pytest.raises(AssertionError, match="no Location header"):
        contract.check_response("/clusters/{name}", "DELETE", 202, {}, {"cluster": {}, "status_url": "/x"})


# real calls --------------------------------------------------------------------------------
def test_users(api: Api) -> None:
    # Given no user, when alice creates hers, then 201
    created = api.call("POST", "/users", body={"name": OWNER})
    assert created.status == 201
    assert created.body["iam_user_name"] == f"lsst-{OWNER}"
    # When she asks again (no Idempotency-Key), then the user is converged: 200
    assert api.call("POST", "/users", body={"name": OWNER}).status == 200
    # When a request is replayed with its Idempotency-Key, then the first answer comes back
    first = api.call("POST", "/users", body={"name": OWNER}, key="user-once")
    replay = api.call("POST", "/users", body={"name": OWNER}, key="user-once")
    assert (replay.status, replay.body) == (first.status, first.body)
    # When she lists and gets users, then she sees her own
    assert [u["name"] for u in api.call("GET", "/users").body["users"]] == [OWNER]
    assert api.call("GET", "/users/{name}", name=OWNER).body["secret_arn"] == created.body["secret_arn"]
    # When she creates a user for bob, then 403 naming the field
    forbidden = api.call("POST", "/users", body={"name": OTHER})
    assert (forbidden.status, forbidden.body["error"]["field"]) == (403, "name")
    # When an admin creates bob, then bob cannot see alice (404), and the admin sees both
    assert api.call("POST", "/users", body={"name": OTHER}, who=ADMIN).status == 201
    assert api.call("GET", "/users/{name}", name=OWNER, who=OTHER).status == 404
    assert {u["name"] for u in api.call("GET", "/users", who=ADMIN).body["users"]} == {OWNER, OTHER}


def test_presets_are_listed_with_prices_and_a_launch_may_name_one(api: Api) -> None:
    # When anyone signed in lists the presets, then each comes with its prices at rest and full size
    listed = api.call("GET", "/presets")
    assert listed.status == 200
    by_name = {p["name"]: p for p in listed.body["presets"]}
    assert set(by_name) == {"small", "small-spot", "medium", "medium-spot", "large", "large-spot"}
    assert all(0 < p["at_rest_usd_per_hour"] < p["full_size_usd_per_hour"] for p in by_name.values())
    assert api.call("GET", "/presets", who=None).status == 401
    # When she launches a preset with fields of her own, then the record is the preset under them
    launched = api.call(
        "POST",
        "/clusters",
        body={"preset": "small-spot", "name": "from-preset", "budget_usd": 40, "stack_tag": "w_2026_47"},
    )
    assert launched.status == 202
    spec = launched.body["cluster"]["spec"]
    assert spec["preset"] == "small-spot" and spec["queues"] == by_name["small-spot"]["queues"]
    # When the preset does not exist, then 400 naming the field and the presets there are
    refused = api.call("POST", "/clusters", body={"preset": "huge", "name": "from-preset-2", "budget_usd": 40})
    assert (refused.status, refused.body["error"]["field"]) == (400, "preset")
    assert "small-spot" in refused.body["error"]["message"]


def test_a_quote_answers_prices_and_admission_and_names_bad_parameters(api: Api) -> None:
    # When she asks what the small preset costs for 8 hours with 2 nodes and a $10 budget
    quoted = api.call("GET", "/quote", query={"preset": "small", "hours": "8", "nodes": "2", "budget_usd": "10"})
    # Then the answer (checked against the document) prices it and says it would be admitted
    assert quoted.status == 200, quoted.body
    body = quoted.body
    assert body["at_rest_usd_per_hour"] < body["in_use_usd_per_hour"] < body["full_size_usd_per_hour"]
    assert body["run_usd"] == round(8 * body["in_use_usd_per_hour"], 4) and body["budget"]["admitted"]
    # When a parameter is missing or not a number, then 400 naming it
    for query, field in (
        ({"hours": "8"}, "preset"),
        ({"preset": "small"}, "hours"),
        ({"preset": "small", "hours": "eight"}, "hours"),
        ({"preset": "small", "hours": "nan"}, "hours"),
        ({"preset": "small", "hours": "8", "nodes": "1.5"}, "nodes"),
        ({"preset": "small", "hours": "8", "budget_usd": "-3"}, "budget_usd"),
        ({"spec": "{not json", "hours": "8"}, "spec"),
        ({"spec": "[1, 2]", "hours": "8"}, "spec"),
    ):
        refused = api.call("GET", "/quote", query=query)
        assert (refused.status, refused.body["error"]["field"]) == (400, field), query
    assert api.call("GET", "/quote", query={"preset": "small", "hours": "8"}, who=None).status == 401
    # A whole spec instead of a preset (as POST /clusters takes it)
    spec = json.dumps({"queues": [{"name": "q", "instance_types": ["c5.4xlarge"], "max_nodes": 8}], "budget_usd": 30})
    quoted = api.call("GET", "/quote", query={"spec": spec, "hours": "2"})
    assert quoted.status == 200 and quoted.body["preset"] is None and quoted.body["max_nodes"] == 8
    assert quoted.body["budget"]["budget_usd"] == 30


def test_the_cost_history_is_the_guards_measurements(api: Api) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from lsstctl import wiring
    from lsstctl.services import costs

    assert api.call("POST", "/clusters", body=cluster_spec(), key="history-1").status == 202
    make_ready(CLUSTER)
    # Before the guard measured it: no points
    empty = api.call("GET", "/clusters/{name}/cost/history", name=CLUSTER)
    assert empty.status == 200 and empty.body["points"] == [] and empty.body["step_seconds"] is None
    # When the guard measures it three times, a minute apart, with nothing changed in between:
    # a point where the ledger was written (the first) and one at the latest measurement
    # (spend between them grows at the one burn rate)
    start = datetime.now(UTC)
    for minute in (1, 2, 3):
        costs.guard_tick(replace(wiring.deps(), clock=lambda m=minute: start + timedelta(minutes=m)))
    history = api.call("GET", "/clusters/{name}/cost/history", name=CLUSTER)
    points = history.body["points"]
    assert history.status == 200 and len(points) == 2 and history.body["budget_usd"] == cluster_spec()["budget_usd"]
    assert [datetime.fromisoformat(p["at"]) for p in points] == [start + timedelta(minutes=m) for m in (1, 3)]
    assert points[0]["burn_usd_per_hour"] == points[1]["burn_usd_per_hour"]
    assert [p["at"] for p in points] == sorted(p["at"] for p in points)
    assert points[-1]["spend_usd"] == api.call("GET", "/clusters/{name}/cost", name=CLUSTER).body["spend_usd"]
    # The ledger's answer does not carry the series; another owner gets 404
    assert "history" not in api.call("GET", "/clusters/{name}/cost", name=CLUSTER).body
    assert api.call("GET", "/clusters/{name}/cost/history", name=CLUSTER, who=OTHER).status == 404


def test_cluster_lifecycle_requests(api: Api) -> None:
    # Given alice, when she launches a cluster, then 202 with its status URL in the body and Location
    launched = api.call("POST", "/clusters", body=cluster_spec(), key="launch-1")
    assert launched.status == 202
    assert launched.body["status_url"] == launched.headers["Location"] == f"/clusters/{CLUSTER}"
    assert launched.body["cluster"]["state"] == "requested"
    # When she lists and gets clusters, then 200
    assert [c["name"] for c in api.call("GET", "/clusters").body["clusters"]] == [CLUSTER]
    assert api.call("GET", "/clusters/{name}", name=CLUSTER).body["spec"]["owner"] == OWNER
    # When she submits a job to the cluster that is not ready, then 409
    early = api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body=JOB)
    assert (early.status, early.body["error"]["code"]) == (409, "conflict")
    # When she lists its jobs and asks for one that does not exist, then 200 (none) and 404
    assert api.call("GET", "/clusters/{name}/jobs", name=CLUSTER).body == {
        "jobs": [],
        "cost": {"spend_usd": 0.0, "jobs_usd": 0.0, "idle_usd": 0.0},
    }
    assert api.call("GET", "/clusters/{name}/jobs/{job_id}", name=CLUSTER, job_id="j-missing").status == 404
    # When the name is launched again with another spec, then 409 naming the field
    taken = api.call("POST", "/clusters", body=cluster_spec(budget_usd=30))
    assert (taken.status, taken.body["error"]["field"]) == (409, "name")
    # When she deletes it (twice), then 202 tearing_down both times
    for attempt in (1, 2):
        deleted = api.call("DELETE", "/clusters/{name}", name=CLUSTER, key=f"delete-{attempt}")
        assert (deleted.status, deleted.body["cluster"]["state"]) == (202, "tearing_down")
        assert deleted.headers["Location"] == f"/clusters/{CLUSTER}"
    # When a missing cluster is asked for or deleted, then 404
    assert api.call("GET", "/clusters/{name}", name="nope").status == 404
    assert api.call("DELETE", "/clusters/{name}", name="nope").status == 404


def test_jobs_on_a_ready_cluster(api: Api) -> None:
    # Given a ready cluster
    assert api.call("POST", "/clusters", body=cluster_spec()).status == 202
    make_ready(CLUSTER)
    # When alice submits a job, then 202 with the job's status URL
    accepted = api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body=JOB, key="job-1")
    assert accepted.status == 202
    job = accepted.body["job"]
    assert accepted.body["status_url"] == accepted.headers["Location"] == f"/clusters/{CLUSTER}/jobs/{job['job_id']}"
    assert job["state"] == "submitting"
    # When she follows it and lists the cluster's jobs, then 200
    assert api.call("GET", "/clusters/{name}/jobs/{job_id}", name=CLUSTER, job_id=job["job_id"]).body == job
    assert api.call("GET", "/clusters/{name}/jobs", name=CLUSTER).body["jobs"] == [job]
    # When she submits a pipetask to a queue the cluster does not have, then 400 naming the queue
    pipetask = {"pipetask": {"butler": "/shared/repo", "pipeline": "p.yaml", "inputs": ["a"], "output": "u/alice/o"}}
    wrong = api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body={**pipetask, "queue": "gpu"})
    assert (wrong.status, wrong.body["error"]["field"]) == (400, "queue")
    # When she gives both a command and a pipetask, then 400 about the body as a whole
    both = api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body={**pipetask, "command": "true"})
    assert (both.status, both.body["error"]["field"]) == (400, "body")


def test_bad_requests(api: Api) -> None:
    # When the body is not JSON, empty, or not an object, then 400 about the body
    for raw in (b"{not json", b"", b"[1, 2]"):
        bad = api.call("POST", "/clusters", raw=raw)
        assert (bad.status, bad.body["error"]["code"], bad.body["error"]["field"]) == (400, "validation_error", "body")
    # When a field is invalid, then 400 naming it, with every problem in details
    invalid = api.call("POST", "/clusters", body=cluster_spec(budget_usd=-1, idle_minutes=1))
    assert (invalid.status, invalid.body["error"]["field"]) == (400, "budget_usd")
    assert {d["field"] for d in invalid.body["error"]["details"]} == {"budget_usd", "idle_minutes"}
    # When the region is not the control plane's, then 400 naming it
    elsewhere = api.call("POST", "/clusters", body=cluster_spec(region="eu-west-1"))
    assert (elsewhere.status, elsewhere.body["error"]["field"]) == (400, "region")
    # When the Idempotency-Key is too long, then 400 naming the header
    long_key = api.call("DELETE", "/clusters/{name}", name=CLUSTER, key="k" * 256)
    assert (long_key.status, long_key.body["error"]["field"]) == (400, "Idempotency-Key")
    # When the body is not declared JSON, then Chalice answers 415 in its own shape
    assert api.call("POST", "/users", body={"name": OWNER}, headers={"Content-Type": "text/plain"}).status == 415


def test_identity_and_visibility(api: Api) -> None:
    # Given alice's cluster
    assert api.call("POST", "/clusters", body=cluster_spec()).status == 202
    # When nobody is named, or the identity is not one, then 401
    for who in (None, "not a name!"):
        anonymous = api.call("GET", "/clusters", who=who)
        assert (anonymous.status, anonymous.body["error"]["code"]) == (401, "unauthenticated")
    assert api.call("POST", "/clusters", body=cluster_spec("other"), who=None).status == 401
    # When bob asks for, lists jobs of, submits to or deletes alice's cluster, then 404 (names do not leak)
    assert api.call("GET", "/clusters", who=OTHER).body == {"clusters": []}
    assert api.call("GET", "/clusters/{name}", name=CLUSTER, who=OTHER).status == 404
    assert api.call("GET", "/clusters/{name}/jobs", name=CLUSTER, who=OTHER).status == 404
    assert api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body=JOB, who=OTHER).status == 404
    assert api.call("DELETE", "/clusters/{name}", name=CLUSTER, who=OTHER).status == 404
    # When bob launches a cluster for alice, then 403 naming the owner field
    forbidden = api.call("POST", "/clusters", body=cluster_spec("for-alice", owner=OWNER), who=OTHER)
    assert (forbidden.status, forbidden.body["error"]["field"]) == (403, "owner")


def test_idempotency_key_reuse(api: Api) -> None:
    # Given a launch made with a key
    first = api.call("POST", "/clusters", body=cluster_spec(), key="launch-once")
    assert first.status == 202
    # When the same key comes with the same body, then the first answer is replayed
    assert api.call("POST", "/clusters", body=cluster_spec(), key="launch-once").body == first.body
    # When it comes with a different body, then 422 naming the header
    reused = api.call("POST", "/clusters", body=cluster_spec(budget_usd=99), key="launch-once")
    assert (reused.status, reused.body["error"]["code"]) == (422, "idempotency_key_reused")
    # And jobs: the same key with another body is refused too
    make_ready(CLUSTER)
    assert api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body=JOB, key="job-once").status == 202
    again = api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body={**JOB, "cores": 2}, key="job-once")
    assert again.status == 422


def test_an_unexpected_failure_is_a_documented_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from lsstctl import wiring

    # Given a state store that breaks
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("table on fire")

    monkeypatch.setattr(wiring.deps().store, "list_clusters", broken)
    # When clusters are listed, then 500 in the Error shape, without internals
    failed = api.call("GET", "/clusters")
    assert (failed.status, failed.body["error"]["code"]) == (500, "internal_error")
    assert "fire" not in failed.body["error"]["message"]


# spend ---------------------------------------------------------------------------------------
def run_cluster_resources(cid: str) -> None:
    """What ParallelCluster would run, in moto's EC2, tagged as the guard finds it: a head
    node, two compute nodes (one already terminated) and the shared EBS volume."""
    from lsstctl.adapters.inventory import NAME_TAG, NODE_TYPE_TAG

    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def tags(kind: str, **extra: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in {NAME_TAG: cid, **extra}.items()]}]

    ec2.run_instances(
        ImageId=image,
        InstanceType="t3.medium",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=tags("instance", **{NODE_TYPE_TAG: "HeadNode"}),
    )
    compute = ec2.run_instances(
        ImageId=image,
        InstanceType="c5.large",
        MinCount=2,
        MaxCount=2,
        TagSpecifications=tags("instance", **{NODE_TYPE_TAG: "Compute"}),
    )
    ec2.terminate_instances(InstanceIds=[compute["Instances"][0]["InstanceId"]])
    ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=100, VolumeType="gp3", TagSpecifications=tags("volume"))


def test_cluster_spend(api: Api) -> None:
    from lsstctl import wiring
    from lsstctl.services import costs

    # Given alice's cluster and bob's, neither measured yet
    assert api.call("POST", "/clusters", body=cluster_spec()).status == 202
    assert api.call("POST", "/clusters", body=cluster_spec("bobs"), who=OTHER).status == 202
    # When alice gets her cluster, then its cost summary says nothing was measured
    unmeasured = api.call("GET", "/clusters/{name}", name=CLUSTER).body["cost"]
    assert unmeasured == {
        "measured_at": None,
        "spend_usd": 0,
        "burn_usd_per_hour": None,
        "budget_usd": 20,
        "budget_used_percent": None,
        "projected_budget_at": None,
    }
    # And its ledger is the not-yet-measured placeholder, and there are no totals
    pending = api.call("GET", "/clusters/{name}/cost", name=CLUSTER)
    assert pending.status == 200
    assert pending.body == {
        "cluster": CLUSTER,
        "cluster_id": CLUSTER_ID,
        "owner": OWNER,
        "generation": 1,
        "measured_at": None,
        "spend_usd": 0,
        "budget_usd": 20,
        "breakdown": [],
    }
    empty = api.call("GET", "/costs", who=ADMIN).body
    assert (empty["owners"], empty["total_spend_usd"], empty["stack_cache"]["hits"]) == ([], 0, 0)

    # When alice's cluster runs (head, compute, storage) and the guard ticks (moto's EC2)
    make_ready(CLUSTER)
    run_cluster_resources(CLUSTER_ID)
    tick = costs.guard_tick(wiring.deps())
    assert (tick["clusters"], tick["teardowns"], tick.get("errors")) == (2, {}, None)

    # Then her ledger itemises every resource: which still bill, and what each has cost
    ledger = api.call("GET", "/clusters/{name}/cost", name=CLUSTER).body
    assert (ledger["cluster"], ledger["owner"], ledger["state"], ledger["budget_usd"]) == (CLUSTER, OWNER, "ready", 20)
    items = ledger["breakdown"]
    assert sorted((i["kind"], i["role"], i["type"], i["billing"]) for i in items) == [
        ("instance", "compute", "c5.large", False),
        ("instance", "compute", "c5.large", True),
        ("instance", "head", "t3.medium", True),
        ("volume", "storage", "gp3", True),
    ]
    assert all((i["ended_at"] is None) == i["billing"] for i in items)
    assert ledger["spend_usd"] > 0 and ledger["projected_budget_at"] is not None
    assert ledger["burn_usd_per_hour"] == pytest.approx(sum(i["hourly_usd"] for i in items if i["billing"]), abs=1e-5)
    assert ledger["base_burn_usd_per_hour"] < ledger["burn_usd_per_hour"] < ledger["max_burn_usd_per_hour"]
    # And the cluster's summary is the ledger's
    summary = api.call("GET", "/clusters/{name}", name=CLUSTER).body["cost"]
    assert summary == {k: ledger[k] for k in summary}
    # And bob's cluster, measured with nothing running, burns nothing and is never projected to its budget
    bobs = api.call("GET", "/clusters/{name}/cost", name="bobs", who=OTHER).body
    assert (bobs["spend_usd"], bobs["burn_usd_per_hour"], bobs["breakdown"], bobs["projected_budget_at"]) == (
        0,
        0,
        [],
        None,
    )

    # When totals are asked for, then owners see their own and the admin everyone's
    mine = api.call("GET", "/costs").body
    assert [(o["owner"], o["clusters"]) for o in mine["owners"]] == [(OWNER, 1)]
    assert mine["owners"][0]["spend_usd"] == mine["total_spend_usd"] == round(ledger["spend_usd"], 4)
    everyone = api.call("GET", "/costs", who=ADMIN).body
    assert [(o["owner"], o["clusters"]) for o in everyone["owners"]] == [(OWNER, 1), (OTHER, 1)]
    assert everyone["total_spend_usd"] == mine["total_spend_usd"]

    # When bob asks for alice's ledger, nobody asks, or the cluster does not exist, then 404, 401, 404
    assert api.call("GET", "/clusters/{name}/cost", name=CLUSTER, who=OTHER).status == 404
    anonymous = api.call("GET", "/clusters/{name}/cost", name=CLUSTER, who=None)
    assert (anonymous.status, anonymous.body["error"]["code"]) == (401, "unauthenticated")
    assert api.call("GET", "/costs", who=None).status == 401
    assert api.call("GET", "/clusters/{name}/cost", name="nope").status == 404


def test_teardown_summaries(api: Api) -> None:
    from lsstctl import wiring
    from lsstctl.services import teardown_workflow

    # Given alice's running cluster and bob's, both being torn down
    assert api.call("POST", "/clusters", body=cluster_spec()).status == 202
    assert api.call("POST", "/clusters", body=cluster_spec("bobs"), who=OTHER).status == 202
    make_ready(CLUSTER)
    run_cluster_resources(CLUSTER_ID)
    assert api.call("DELETE", "/clusters/{name}", name=CLUSTER).body["cluster"]["teardown"] is None
    execution = api.call("DELETE", "/clusters/{name}", name="bobs", who=OTHER).body["cluster"]["teardown_execution"]
    # When alice's teardown stops compute and completes
    deps = wiring.deps()
    teardown_workflow.stop_fleet(deps, CLUSTER_ID)
    teardown_workflow.finish_teardown(deps, CLUSTER_ID)
    # Then her cluster is deleted, with the teardown's record and its final spend
    deleted = api.call("GET", "/clusters/{name}", name=CLUSTER).body
    assert deleted["state"] == "deleted" and deleted["compute_stopped_at"]
    record = deleted["teardown"]
    assert (record["outcome"], record["reason"], record["archive_uri"]) == ("deleted", "user", None)
    assert record["compute_stopped_at"] == deleted["compute_stopped_at"] and "error" not in record
    assert record["final_spend_usd"] > 0 and record["final_spend_usd"] == pytest.approx(
        deleted["cost"]["spend_usd"], abs=1e-5
    )
    assert api.call("GET", "/clusters/{name}/cost", name=CLUSTER).body["state"] == "tearing_down"
    # When bob's teardown fails (its archive could not be written)
    cause = json.dumps({"errorMessage": "archive failed: disk full"})
    teardown_workflow.teardown_failed(
        deps, cluster_id(OTHER, "bobs"), execution, {"Error": "ArchiveFailedError", "Cause": cause}
    )
    # Then his cluster is failed, and the record says why; the admin's list carries both records
    failed = api.call("GET", "/clusters/{name}", name="bobs", who=OTHER).body
    assert failed["state"] == "failed" and failed["compute_stopped_at"] is None
    assert failed["teardown"]["outcome"] == "failed" and "archive_uri" not in failed["teardown"]
    assert failed["teardown"]["error"] == {"code": "ArchiveFailedError", "message": "archive failed: disk full"}
    listed = api.call("GET", "/clusters", who=ADMIN).body["clusters"]
    assert sorted((c["name"], c["teardown"]["outcome"]) for c in listed) == [("bobs", "failed"), (CLUSTER, "deleted")]
