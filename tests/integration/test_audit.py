"""The audit trail (lsstctl/services/audit.py): every mutating call, refused ones included,
with the caller's full ARN, the request id and the outcome; automatic actions with the ARN
of the function that acted; read by admins only, a page at a time."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import cid
from tests.integration.api_contract import ADMIN, OTHER, OWNER, Api, cluster_spec
from tests.integration.plane import ready, tick

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

ACCOUNT = "123456789012"
PEOPLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/lsstctl-local-people"
STRANGER = f"arn:aws:iam::{ACCOUNT}:user/{OWNER}"  # not the user create-user made


def trail(api: Api, **query: str) -> list[dict[str, Any]]:
    reply = api.call("GET", "/audit", who=ADMIN, query=query)
    assert reply.status == 200, reply.body
    return reply.body["entries"]


def test_every_mutating_call_is_recorded_with_its_caller_request_and_outcome(api: Api) -> None:
    assert api.call("POST", "/clusters", body=cluster_spec("demo"), key="k1").status == 202
    assert api.call("POST", "/clusters", body=cluster_spec("demo"), who=STRANGER).status == 403
    assert api.call("DELETE", "/clusters/{name}", name="demo", who=OTHER).status == 404
    assert api.call("PATCH", "/clusters/{name}", name="demo", body={"idle_minutes": 0}).status == 400
    assert api.call("GET", "/clusters/{name}", name="demo").status == 200  # a read: not recorded

    entries = trail(api)
    seen = [(e["who"], e["action"], e["cluster"], e["status"], e["outcome"]) for e in entries]
    assert seen == [
        (f"{PEOPLE}/{OWNER}", "POST /clusters", None, 202, "ok"),
        (STRANGER, "POST /clusters", None, 403, "forbidden"),
        (f"{PEOPLE}/{OTHER}", "DELETE /clusters/{name}", "demo", 404, "not_found"),
        (f"{PEOPLE}/{OWNER}", "PATCH /clusters/{name}", "demo", 400, "validation_error"),
    ]
    assert all(e["request_id"] for e in entries)
    assert len({e["request_id"] for e in entries}) == 4
    assert entries[0]["owner"] == OWNER and entries[2]["owner"] == OTHER
    # A replay under the same Idempotency-Key is a call too: recorded again, same answer.
    assert api.call("POST", "/clusters", body=cluster_spec("demo"), key="k1").status == 202
    assert [e["action"] for e in trail(api, who=f"{PEOPLE}/{OWNER}")] == [
        "POST /clusters",
        "PATCH /clusters/{name}",
        "POST /clusters",
    ]


def test_only_admins_read_it_filtered_and_a_page_at_a_time(api: Api) -> None:
    for name in ("one", "two", "three"):
        assert api.call("POST", "/clusters", body=cluster_spec(name)).status == 202
    assert api.call("DELETE", "/clusters/{name}", name="one").status == 202

    refused = api.call("GET", "/audit", who=OWNER)
    assert refused.status == 403 and refused.body["error"]["code"] == "forbidden"
    assert api.call("GET", "/audit", who=STRANGER).status == 403

    assert [e["action"] for e in trail(api, action="DELETE")] == ["DELETE /clusters/{name}"]
    assert [(e["cluster"], e["outcome"]) for e in trail(api, cluster="one")] == [("one", "ok")]
    # The teardown the DELETE started is an entry of its own, by the same caller and request.
    (call,) = trail(api, action="DELETE")
    (teardown,) = trail(api, action="teardown")
    assert teardown["action"] == "teardown:user" and teardown["outcome"] == "started"
    assert (teardown["who"], teardown["request_id"]) == (call["who"], call["request_id"])
    pages, query = [], {"limit": "2"}
    while True:
        reply = api.call("GET", "/audit", who=ADMIN, query=query)
        pages.append([e["action"] for e in reply.body["entries"]])
        if not reply.body["next"]:
            break
        query = {"limit": "2", "next": reply.body["next"]}
    assert [a for page in pages for a in page] == [e["action"] for e in trail(api)]
    assert sum(len(p) for p in pages) == 5 and all(len(p) <= 2 for p in pages)

    for query, field in [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-12-06T04:00:00"}, "since"),  # no offset
        ({"limit": "0"}, "limit"),
        ({"who": "x", "colour": "red"}, "colour"),
        ({"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"}, "since"),
    ]:
        bad = api.call("GET", "/audit", who=ADMIN, query=query)
        assert bad.status == 400 and bad.body["error"]["field"] == field, (query, bad.body)


def test_automatic_actions_name_the_function_that_acted(plane: Any) -> None:
    from aws_lambda_powertools.utilities.typing import LambdaContext  # noqa: F401 (the type the handler takes)

    from lambdas.guard import lambda_handler
    from lsstctl import wiring
    from lsstctl.emulator.glue import LambdaContext as Context
    from lsstctl.services import audit
    from lsstctl.services.identity import Principal

    ready("short", plane, max_lifetime_hours=1, budget_usd=100)
    guard = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:lsstctl-guard"
    for _ in range(62):
        plane.advance(60)
        lambda_handler({}, Context(function_name="lsstctl-guard", invoked_function_arn=guard))
    entries = audit.query(wiring.deps(), Principal("admin", is_admin=True), action="teardown")["entries"]
    assert [(e["who"], e["action"], e["cluster"], e["owner"], e["outcome"]) for e in entries] == [
        (guard, "teardown:lifetime", cid("short"), "alice", "started")
    ]
    assert entries[0]["request_id"]  # the invocation's
    # The same action outside any invocation (a test, a script) names the control plane.
    ready("other", plane, max_lifetime_hours=1, budget_usd=100)
    for _ in range(62):
        tick(plane)
    who = {e["cluster"]: e["who"] for e in audit.query(wiring.deps(), Principal("a", is_admin=True))["entries"]}
    assert who[cid("other")] == "lsstctl"
