"""End to end over HTTP: the local emulator serving the API, the real workflows behind it,
a real Slurm job, and teardown to zero."""
from __future__ import annotations

import json
import urllib.request

from lsstctl.emulator.demo import Api, run_demo
from tests.conftest import cluster_spec, live_instances


def test_the_whole_lifecycle_through_the_api(emulator):
    lines: list[str] = []
    assert run_demo(emulator, out=lines.append), "\n".join(lines)
    steps = [line for line in lines if line.startswith(("ok", "FAIL"))]
    assert len(steps) == 8 and all(line.startswith("ok") for line in steps)
    assert "Slurm job" in next(line for line in steps if "job finished" in line)


def test_bad_requests_get_clear_errors_and_create_nothing(emulator):
    api = Api(emulator.api_url)
    status, body = api.call("POST", "/clusters", cluster_spec("e2e-bad", queues=[
        {"name": "q", "instance_types": ["c5.large"], "min_nodes": 4, "max_nodes": 1}]))
    assert status == 400 and body["error"]["code"] == "invalid_cluster_config"
    assert "Max count must be greater than or equal to min count." in body["error"]["message"]
    assert api.call("GET", "/clusters/e2e-bad")[0] == 404 and live_instances("e2e-bad") == []

    status, body = api.call("POST", "/clusters", {"name": "e2e-bad", "queues": [], "budget_usd": -1})
    assert status == 400 and body["error"]["field"] in {"queues", "budget_usd"}
    assert {d["field"] for d in body["error"]["details"]} == {"queues", "budget_usd"}

    request = urllib.request.Request(emulator.api_url + "/clusters", data=b"{not json", method="POST",
                                     headers={"X-Lsst-Principal": "alice", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request)
        raise AssertionError("expected a 400")
    except urllib.error.HTTPError as error:
        assert error.code == 400 and json.loads(error.read())["error"]["field"] == "body"

    anonymous = urllib.request.Request(emulator.api_url + "/clusters")
    try:
        urllib.request.urlopen(anonymous)
        raise AssertionError("expected a 401")
    except urllib.error.HTTPError as error:
        assert error.code == 401 and json.loads(error.read())["error"]["code"] == "unauthenticated"


def test_a_retried_launch_over_http_creates_one_cluster(emulator):
    api = Api(emulator.api_url)
    spec = cluster_spec("e2e-retry")
    first = api.call("POST", "/clusters", spec, key="retry-1")
    second = api.call("POST", "/clusters", spec, key="retry-1")
    assert first == second and first[0] == 202
    reused = api.call("POST", "/clusters", {**spec, "budget_usd": 999}, key="retry-1")
    assert reused[0] == 422 and reused[1]["error"]["code"] == "idempotency_key_reused"
    api.wait_for("/clusters/e2e-retry", "state", {"ready"}, {"failed", "deleted"})
    assert len(live_instances("e2e-retry")) == 2
    api.expect(202, "DELETE", "/clusters/e2e-retry")
    api.wait_for("/clusters/e2e-retry", "state", {"deleted"}, {"failed"})
    assert live_instances("e2e-retry") == []
