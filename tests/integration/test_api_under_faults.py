"""The API on AWS's bad days: answers that tell the truth (503 with Retry-After, never a
4xx for a valid request, never a bare 500), no half-created resource, keys released, and
retries that converge — for every AWS call of every mutating request, failing in turn.
Every answer is still checked against openapi.yaml by the harness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from lsstctl.emulator.faults import FaultInjector, fail_call
from tests.integration.api_contract import ADMIN, CLUSTER, JOB, cluster_spec, make_ready

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")


@pytest.fixture(autouse=True)
def unlimited(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request here is repeated once per AWS call it makes: far more changes a
    minute, and more live clusters, than one owner is admitted by default (the limits have
    their own tests, test_rate_limit.py and test_quotas.py)."""
    from lsstctl import wiring

    monkeypatch.setenv("LSSTCTL_RATE_LIMIT_PER_MINUTE", "0")
    monkeypatch.setenv("LSSTCTL_QUOTA_LIVE_CLUSTERS", "1000")
    wiring.reset()


def stuck_keys() -> list[dict[str, Any]]:
    """Idempotency records still in progress once no request runs: keys nobody can reuse."""
    items = boto3.client("dynamodb").scan(TableName="lsstctl-idempotency").get("Items", [])
    return [i for i in items if i["status"]["S"] == "INPROGRESS"]


def executions(kind: str) -> list[str]:
    sfn = boto3.client("stepfunctions")
    machine = next(
        m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"] if m["name"] == f"lsstctl-{kind}"
    )
    return sorted(e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"])


def calls_of(request: Callable[[], Any]) -> int:
    """How many AWS calls the control plane makes for this request (nothing fails)."""
    with FaultInjector(plan=lambda call: False) as counter:
        request()
    return counter.calls


def test_reads_and_writes_answer_503_with_retry_after_when_aws_fails(api):
    api.call("POST", "/clusters", body=cluster_spec())
    # Given DynamoDB failing every call, beyond the SDK's retries
    with FaultInjector(plan=lambda call: call.service == "dynamodb"):
        for method, route, body in [
            ("GET", "/clusters", None),
            ("GET", "/clusters/{name}", None),
            ("GET", "/costs", None),
            ("POST", "/clusters", cluster_spec("other")),
            ("DELETE", "/clusters/{name}", None),
        ]:
            reply = api.call(method, route, body=body, name=CLUSTER, key="k-1" if method != "GET" else None)
            # Then each answer is 503 aws_unavailable, says when to retry and what AWS said
            assert reply.status == 503, (method, route, reply.body)
            assert reply.body["error"]["code"] == "aws_unavailable"
            assert reply.body["error"]["details"]["aws_code"]
            assert int({k.lower(): v for k, v in reply.headers.items()}["retry-after"]) >= 1
    # And nothing was half-created or left in progress
    assert api.call("GET", "/clusters/{name}", name="other").status == 404
    assert stuck_keys() == []
    assert api.call("GET", "/clusters/{name}", name=CLUSTER).body["state"] == "requested"


def test_a_permanent_aws_refusal_is_a_502_naming_the_code(api):
    denied = FaultInjector(plan=lambda call: call.operation == "StartExecution", error=("AccessDeniedException", 400))
    with denied:
        reply = api.call("POST", "/clusters", body=cluster_spec(), key="k-denied")
    assert reply.status == 502 and reply.body["error"]["code"] == "aws_error"
    assert reply.body["error"]["details"] == {"aws_code": "AccessDeniedException", "operation": "StartExecution"}
    assert api.call("GET", "/clusters/{name}", name=CLUSTER).body["state"] == "deleted"  # withdrawn
    assert stuck_keys() == []


def test_every_call_of_every_mutating_request_can_fail_and_the_retry_converges(api):
    deps_calls: dict[str, int] = {}

    def launch(k: int):
        return api.call("POST", "/clusters", body=cluster_spec(f"c-{k}"), key=f"launch-{k}")

    def user(k: int):
        return api.call("POST", "/users", body={"name": f"user-{k + 1}"}, key=f"user-{k}", who=ADMIN)

    def job(k: int):
        return api.call("POST", "/clusters/{name}/jobs", body=JOB, name=CLUSTER, key=f"job-{k}")

    def delete(k: int):
        return api.call("DELETE", "/clusters/{name}", name=f"c-{k}", key=f"delete-{k}")

    # The cluster the jobs go to, and how many AWS calls each request makes when nothing fails
    assert api.call("POST", "/clusters", body=cluster_spec()).status == 202
    make_ready(CLUSTER)
    for name, request, status in (
        ("launch", launch, 202),
        ("delete", delete, 202),
        ("user", user, 201),
        ("job", job, 202),
    ):
        deps_calls[name] = calls_of(lambda: request(-1).status == status or pytest.fail(name))  # noqa: B023 (called at once)
    assert min(deps_calls.values()) >= 4, deps_calls

    answers: dict[str, list[int]] = {}
    for name, request in (("launch", launch), ("user", user), ("job", job)):
        for k in range(deps_calls[name]):
            # When the k-th AWS call of the request fails
            with FaultInjector(plan=fail_call(k)) as faults:
                first = request(k)
            assert len(faults.log) == 1, (name, k)
            # Then the answer tells the truth, and the retry with the same key succeeds
            assert first.status in {200, 201, 202, 503}, (name, k, faults.log, first.body)
            answers.setdefault(name, []).append(first.status)
            retried = request(k)
            assert retried.status in {200, 201, 202}, (name, k, faults.log, retried.body)
            assert stuck_keys() == [], (name, k, faults.log)
        # And every retry converged on one resource
    clusters = {c["name"]: c for c in api.call("GET", "/clusters").body["clusters"]}
    for k in range(deps_calls["launch"]):
        assert clusters[f"c-{k}"]["state"] == "requested", k
        assert clusters[f"c-{k}"]["launch_execution"].rsplit(":", 1)[1] in executions("launch")
    jobs = api.call("GET", "/clusters/{name}/jobs", name=CLUSTER).body["jobs"]
    assert len(jobs) == deps_calls["job"] + 1  # one per key: none twice, none lost
    assert {j["execution"].rsplit(":", 1)[1] for j in jobs} <= set(executions("job"))
    iam = boto3.client("iam")
    for k in range(deps_calls["user"]):  # one user, one key, whatever failed on the way
        assert len(iam.list_access_keys(UserName=f"lsst-user-{k + 1}")["AccessKeyMetadata"]) == 1, k
    # Some first attempts failed visibly, some recovered on their own (a retried release)
    assert 503 in answers["launch"] and 503 in answers["job"], answers

    for k in range(deps_calls["delete"]):
        with FaultInjector(plan=fail_call(k)) as faults:
            first = delete(k)
        assert first.status in {202, 503}, (k, faults.log, first.body)
        assert delete(k).status == 202
        assert stuck_keys() == []
    tearing = [n for n in executions("teardown") if n.startswith("teardown-c-")]
    assert len(tearing) == deps_calls["delete"] + 1, tearing  # one teardown per cluster
