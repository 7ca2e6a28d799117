"""Shared fixtures. Layers: unit (no AWS), integration (moto in-process), workflows and
e2e (one emulator per session: moto's server, the real ASL, real handlers, real Slurm)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "chalice_app"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _mocked(monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]) -> Iterator[None]:
    from moto import mock_aws

    from lsstctl import wiring
    from lsstctl.emulator.glue import install_atomic_dynamodb_writes

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    install_atomic_dynamodb_writes()
    with mock_aws(config=config):  # type: ignore[arg-type]
        wiring.reset()
        yield
    wiring.reset()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in-process, with no endpoint override leaking in from an emulator."""
    yield from _mocked(monkeypatch, {})


@pytest.fixture
def aws_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As `aws`, plus AWS-managed IAM policies, as a real account has (ParallelCluster's
    validators look them up; loading them costs about a second)."""
    yield from _mocked(monkeypatch, {"iam": {"load_aws_managed_policies": True}})


def pcluster_network(session: Any) -> dict[str, str]:
    """What ParallelCluster's validators need in an account: VPC, subnet, key, its AMI."""
    from lsstctl.emulator.bootstrap import create_cluster_network

    return create_cluster_network(session, REGION, key_name="test-key")


def cid(name: str, owner: str = "alice") -> str:
    """The id (record key, AWS name) of an owner's cluster `name`: names are per owner."""
    from lsstctl.domain.models import cluster_id

    return cluster_id(owner, name)


def cluster_spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "queues": [{"name": "compute", "instance_types": ["c5.large"], "min_nodes": 1, "max_nodes": 3}],
        "stack_tag": "w_2026_47",
        "budget_usd": 20,
    }
    spec.update(overrides)
    return spec


# emulator (workflows, e2e) -------------------------------------------------------------
@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from lsstctl.emulator.runtime import Emulator
    from lsstctl.emulator.slurm import LocalSlurm

    if not LocalSlurm.available():
        pytest.fail("Slurm is not installed: run `make deps` (scripts/install-system-packages.sh)")
    emu = Emulator(tmp_path_factory.mktemp("emulator"), api_port=0, poll_seconds=1)
    emu.start()
    yield emu
    emu.stop()


def wait_execution(arn: str, timeout: float = 60) -> dict[str, Any]:
    import boto3

    sfn = boto3.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        execution = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"{arn} still running after {timeout}s")
        time.sleep(0.2)


def states_entered(arn: str) -> list[str]:
    import boto3

    history = boto3.client("stepfunctions").get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]


def drain_events(queue_url: str) -> list[dict[str, Any]]:
    """Everything published on the control plane's bus so far (via the audit queue)."""
    import boto3

    sqs = boto3.client("sqs")
    events: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return events
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def live_instances(cluster: str) -> list[str]:
    import boto3

    reservations = boto3.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:parallelcluster:cluster-name", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]
