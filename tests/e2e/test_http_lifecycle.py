"""End to end over HTTP: the local emulator serving the API, the real workflows behind it,
a real Slurm job, and teardown to zero."""

from __future__ import annotations

import json
import logging
import os
import urllib.request

import boto3

from lsstctl.emulator.demo import OWNER as DEMO_OWNER
from lsstctl.emulator.demo import Api, run_demo
from tests.conftest import cid, cluster_spec, live_instances


def test_the_whole_lifecycle_through_the_api(emulator, capfd, monkeypatch, request):
    answers: list[str] = []
    call = Api.call

    def recorded(self, *args, **kwargs):
        status, body = call(self, *args, **kwargs)
        answers.append(json.dumps(body))
        return status, body

    monkeypatch.setattr(Api, "call", recorded)
    from lsstctl.observability import logger

    log_lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_lines.append(self.format(record))

    keep = Keep()
    keep.setFormatter(logger.registered_formatter)  # the lines exactly as CloudWatch Logs gets them
    level = logger.log_level
    logger._logger.addHandler(keep)
    logger.setLevel("DEBUG")  # every line the control plane would write, not only warnings
    request.addfinalizer(lambda: (logger.setLevel(level), logger._logger.removeHandler(keep)))
    lines: list[str] = []
    assert run_demo(emulator, out=lines.append), "\n".join(lines)
    steps = [line for line in lines if line.startswith(("ok", "FAIL"))]
    assert len(steps) == 10 and all(line.startswith("ok") for line in steps)
    assert "Slurm job" in next(line for line in steps if "job finished" in line)

    # Secrets stay secret: the user's access key, known here, is in no answer, no log
    # line (every Lambda and the API log to this process's stdout and stderr), no event
    # on the bus (the audit queue receives them all) and no archived object.
    secret = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=f"lsstctl/users/{DEMO_OWNER}")["SecretString"]
    )["SecretAccessKey"]
    logs = capfd.readouterr()
    log_lines += [logs.out, logs.err]
    events = drain(os.environ["LSSTCTL_AUDIT_QUEUE_URL"])
    s3 = boto3.client("s3")
    archived = [
        s3.get_object(Bucket="lsstctl-archive", Key=o["Key"])["Body"].read().decode(errors="replace")
        for o in s3.list_objects_v2(Bucket="lsstctl-archive").get("Contents", [])
    ]
    assert len(answers) > 8 and events and archived and len(log_lines) > 40  # the places were looked in
    for place, texts in (("answers", answers), ("logs", log_lines), ("events", events), ("archive", archived)):
        assert not [t for t in texts if secret in t], f"the access key's secret is in the {place}"


def drain(queue_url: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies += [m["Body"] for m in messages]


def test_bad_requests_get_clear_errors_and_create_nothing(emulator):
    api = Api(emulator.api_url)
    status, body = api.call(
        "POST",
        "/clusters",
        cluster_spec("e2e-bad", queues=[{"name": "q", "instance_types": ["c5.large"], "min_nodes": 4, "max_nodes": 1}]),
    )
    assert status == 400 and body["error"]["code"] == "invalid_cluster_config"
    assert "Max count must be greater than or equal to min count." in body["error"]["message"]
    assert api.call("GET", "/clusters/e2e-bad")[0] == 404 and live_instances(cid("e2e-bad")) == []

    status, body = api.call("POST", "/clusters", {"name": "e2e-bad", "queues": [], "budget_usd": -1})
    assert status == 400 and body["error"]["field"] in {"queues", "budget_usd"}
    assert {d["field"] for d in body["error"]["details"]} == {"queues", "budget_usd"}

    request = urllib.request.Request(
        emulator.api_url + "/clusters",
        data=b"{not json",
        method="POST",
        headers={"X-Lsst-Principal": "alice", "Content-Type": "application/json"},
    )
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
    assert len(live_instances(cid("e2e-retry"))) == 2
    api.expect(202, "DELETE", "/clusters/e2e-retry")
    api.wait_for("/clusters/e2e-retry", "state", {"deleted"}, {"failed"})
    assert live_instances(cid("e2e-retry")) == []
