"""Every route of openapi.yaml, called by every kind of caller: the owner, another owner,
an unregistered IAM user, a role with a forged session name, a caller from another
account and an admin. Each gets the status written here, and a refused call leaves no
trace: the state table, the idempotency table, IAM's users and Step Functions'
executions are the same after it as before.

The routes come from the document, so a new route without a row here fails the test."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.integration.api_contract import CLUSTER, JOB, OTHER, OWNER, REGION, Api, cluster_spec, make_ready, operations

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

ACCOUNT = "123456789012"
ADMIN = "admin"  # the local admin: a session of the local people role named in LSSTCTL_ADMIN_PRINCIPALS
ROLE = f"arn:aws:iam::{ACCOUNT}:role/NightlyPipeline"
# The IAM user create-user made for the owner: its signed calls act as the owner
OWNER_USER = f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-{OWNER}"
OUTSIDERS = {
    # a user named like the owner, but not the one create-user made
    "unregistered user": f"arn:aws:iam::{ACCOUNT}:user/{OWNER}",
    # anyone allowed to assume some role may name the session "admin" or "alice"
    "forged session": f"arn:aws:sts::{ACCOUNT}:assumed-role/AnyRole/{ADMIN}",
    "forged owner session": f"arn:aws:sts::{ACCOUNT}:assumed-role/AnyRole/{OWNER}",
    # the owner's own IAM user name, from another account
    "other account": f"arn:aws:iam::210987654321:user/lsstctl/lsst-{OWNER}",
    "other account admin": f"arn:aws:sts::210987654321:assumed-role/lsstctl-local-people/{ADMIN}",
}

# (route, method) -> (parameters, body, {who: expected status}); who is owner, other
# (another owner acting on the owner's things) or admin. Outsiders always get 403. A
# parameter named "?x" goes in the query string: cluster routes name the owner with
# ?owner=, an admin's way to reach another owner's cluster (names are per owner). The
# rows run in this order on one world: reads, then writes, then removals.
MATRIX: dict[tuple[str, str], tuple[dict[str, str], Any, dict[str, int]]] = {
    ("/users", "GET"): ({}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/users/{name}", "GET"): ({"name": OWNER}, None, {"other": 404, "owner": 200, "admin": 200}),
    ("/clusters", "GET"): ({}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/clusters/{name}", "GET"): ({"name": CLUSTER, "?owner": OWNER}, None, {"other": 404, "owner": 200, "admin": 200}),
    ("/clusters/{name}/cost", "GET"): (
        {"name": CLUSTER, "?owner": OWNER},
        None,
        {"other": 404, "owner": 200, "admin": 200},
    ),
    ("/clusters/{name}/cost/history", "GET"): (
        {"name": CLUSTER, "?owner": OWNER},
        None,
        {"other": 404, "owner": 200, "admin": 200},
    ),
    ("/clusters/{name}/jobs", "GET"): (
        {"name": CLUSTER, "?owner": OWNER},
        None,
        {"other": 404, "owner": 200, "admin": 200},
    ),
    ("/clusters/{name}/jobs/{job_id}", "GET"): (
        {"name": CLUSTER, "job_id": "JOB", "?owner": OWNER},
        None,
        {"other": 404, "owner": 200, "admin": 200},
    ),
    ("/clusters/{name}/jobs/{job_id}/log", "GET"): (
        {"name": CLUSTER, "job_id": "JOB", "?owner": OWNER},
        None,
        {"other": 404, "owner": 200, "admin": 200},
    ),
    ("/costs", "GET"): ({}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/presets", "GET"): ({}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/quote", "GET"): ({"?preset": "small", "?hours": "8"}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/quotas/{owner}", "GET"): ({"owner": OWNER}, None, {"other": 404, "owner": 200, "admin": 200}),
    ("/projects", "GET"): ({}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/projects/{name}", "GET"): ({"name": "grant"}, None, {"other": 404, "owner": 200, "admin": 200}),
    ("/users", "POST"): ({}, {"name": OWNER}, {"other": 403, "owner": 200, "admin": 200}),
    ("/clusters", "POST"): ({}, cluster_spec("second", owner=OWNER), {"other": 403, "owner": 202, "admin": 202}),
    ("/clusters/{name}/jobs", "POST"): (
        {"name": CLUSTER, "?owner": OWNER},
        JOB,
        {"other": 404, "owner": 202, "admin": 202},
    ),
    ("/quotas/{owner}", "PUT"): ({"owner": OWNER}, {"live_clusters": 3}, {"other": 403, "owner": 403, "admin": 200}),
    ("/projects/{name}", "PUT"): (
        {"name": "grant"},
        {"members": [OWNER], "budget_usd": 500},
        {"other": 403, "owner": 403, "admin": 200},
    ),
    ("/principals", "POST"): ({}, {"arn": ROLE, "owner": OWNER}, {"other": 403, "owner": 403, "admin": 201}),
    ("/principals", "GET"): ({}, None, {"other": 403, "owner": 403, "admin": 200}),
    ("/audit", "GET"): ({"?action": "POST"}, None, {"other": 403, "owner": 403, "admin": 200}),
    ("/principals", "DELETE"): ({"?arn": ROLE}, None, {"other": 403, "owner": 403, "admin": 200}),
    ("/chatops/identities", "GET"): ({}, None, {"other": 200, "owner": 200, "admin": 200}),
    ("/chatops/identities", "PUT"): (
        {},
        {"team_id": "T0TEAM", "user_id": "U0ALICE", "owner": OWNER},
        {"other": 403, "owner": 403, "admin": 200},
    ),
    ("/chatops/channel", "PUT"): (
        {},
        {"webhook_url": "https://hooks.slack.com/services/T0TEAM/B0CHAN/secretsecret", "owner": OWNER},
        {"other": 403, "owner": 200, "admin": 200},
    ),
    ("/clusters/{name}", "PATCH"): (
        {"name": CLUSTER, "?owner": OWNER},
        {"idle_minutes": 45},
        {"other": 404, "owner": 200, "admin": 200},
    ),
    # The job never reached Slurm here (no workflows run in this layer): cancelled at once, then already over.
    ("/clusters/{name}/jobs/{job_id}", "DELETE"): (
        {"name": CLUSTER, "job_id": "JOB", "?owner": OWNER},
        None,
        {"other": 404, "owner": 200, "admin": 200},
    ),
    ("/clusters/{name}", "DELETE"): (
        {"name": CLUSTER, "?owner": OWNER},
        None,
        {"other": 404, "owner": 202, "admin": 202},
    ),
    ("/chatops/identities", "DELETE"): (
        {"?team_id": "T0TEAM", "?user_id": "U0ALICE"},
        None,
        {"other": 403, "owner": 403, "admin": 200},
    ),
}


def test_every_documented_route_has_a_row(spec: dict[str, Any]) -> None:
    assert {(route, method) for route, method, _ in operations(spec)} == set(MATRIX)


def tracer() -> Any:
    """What a call could have left behind (clients made once: they are what costs here)."""
    from lsstctl import wiring

    settings = wiring.deps().settings
    ddb, sfn, iam = (boto3.client(s, region_name=REGION) for s in ("dynamodb", "stepfunctions", "iam"))
    machines = [m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]]

    def traces() -> dict[str, Any]:
        return {
            # An owner's refused change still counts against their own request rate: that
            # is the limit working, not a trace of the refused call. (Outsiders are refused
            # before any count.)
            "state": sorted(
                str(i)
                for i in ddb.scan(TableName=settings.state_table)["Items"]
                if i["pk"]["S"] not in (f"RATE#{OTHER}", f"RATE#{OWNER}")
            ),
            "idempotency": sorted(map(str, ddb.scan(TableName=settings.idempotency_table)["Items"])),
            "iam users": sorted(u["Arn"] for u in iam.list_users()["Users"]),
            "executions": sorted(
                e["executionArn"] for m in machines for e in sfn.list_executions(stateMachineArn=m)["executions"]
            ),
        }

    return traces


def world(api: Api) -> dict[str, str]:
    """The owner's user, ready cluster and job; bob's user; a project of the owner's."""
    assert (
        api.call(
            "PUT", "/projects/{name}", name="grant", body={"members": [OWNER], "budget_usd": 1000}, who=ADMIN
        ).status
        == 200
    )
    assert api.call("POST", "/users", body={"name": OWNER}).status == 201
    assert api.call("POST", "/users", body={"name": OTHER}, who=ADMIN).status == 201
    assert api.call("POST", "/clusters", body=cluster_spec()).status == 202
    make_ready(CLUSTER)
    job = api.call("POST", "/clusters/{name}/jobs", name=CLUSTER, body=JOB).body["job"]["job_id"]
    return {"JOB": job}


def test_every_route_answers_every_identity_as_written(api: Api) -> None:
    made = world(api)
    traces = tracer()
    wrong: list[str] = []
    for (route, method), (params, body, expected) in MATRIX.items():
        params = {k: made.get(v, v) for k, v in params.items()}
        query = {k[1:]: params.pop(k) for k in list(params) if k.startswith("?")}
        before = traces()
        # Refused callers first (outsiders, then whoever the row refuses), then the rest
        callers = [
            *OUTSIDERS.items(),
            ("other", OTHER),
            ("owner", OWNER),
            ("owner's IAM user", OWNER_USER),
            ("admin", ADMIN),
        ]
        callers.sort(key=lambda c: expected.get(c[0].removesuffix("'s IAM user"), 403) < 400)
        checked = False
        for label, who in callers:
            want = expected.get(label.removesuffix("'s IAM user"), 403)
            if want < 400 and not checked:
                # A refusal leaves nothing behind (no record, no key, no user, no execution)
                if traces() != before:
                    wrong.append(f"{method} {route}: a refused call left a trace")
                checked = True
            key = f"matrix-{label}" if method != "GET" else None
            reply = api.call(method, route, body=body, who=who, key=key, query=query, **params)
            code = (reply.body or {}).get("error", {}).get("code") if isinstance(reply.body, dict) else None
            if reply.status != want or (want >= 400 and code != {403: "forbidden", 404: "not_found"}[want]):
                wrong.append(f"{method} {route} as {label} ({who}): {reply.status} {code}, expected {want}")
            elif (
                label in OUTSIDERS
                and who not in reply.body["error"]["message"]
                and "account" not in reply.body["error"]["message"]
            ):
                wrong.append(f"{method} {route} as {label}: the refusal does not say why: {reply.body}")
    assert not wrong, "\n".join(wrong)
