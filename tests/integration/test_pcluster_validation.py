"""Bad specs are rejected with ParallelCluster's own validator messages."""
from __future__ import annotations

import boto3
import pytest

from lsstctl.adapters.pcluster_validation import EMULATOR_SUPPRESSED, PclusterConfigValidator, reset_pcluster_caches
from lsstctl.domain.models import ClusterSpec, cluster_id
from lsstctl.domain.pcluster_config import render_cluster_config
from lsstctl.emulator.faults import FaultInjector
from lsstctl.errors import AwsUnavailableError, ClusterConfigError
from tests.conftest import pcluster_network


@pytest.fixture
def render(aws_account):
    net = pcluster_network(boto3.Session())

    def _render(queue: dict) -> dict:
        spec = ClusterSpec.model_validate({"name": "c1", "region": "us-east-1", "queues": [queue], "budget_usd": 5})
        return render_cluster_config(spec, owner="alice", subnet_id=net["subnet"], key_name=net["key"],
                                archive_bucket="archive", archive_prefix="alice/c1",
                                metrics_policy_arn=net["metrics_policy"], cluster_id=cluster_id("alice", spec.name))

    return _render


@pytest.fixture
def validator() -> PclusterConfigValidator:
    reset_pcluster_caches()  # each test has its own moto account
    return PclusterConfigValidator(mode="full", region="us-east-1", suppress=EMULATOR_SUPPRESSED)


def test_a_good_config_passes_the_full_validator_set(render, validator):
    warnings = validator.validate("c1", render({"name": "q", "instance_types": ["c5.large"], "max_nodes": 2}))
    assert isinstance(warnings, list)


@pytest.mark.parametrize(
    "queue, message",
    [
        ({"name": "q", "instance_types": ["c5.large"], "min_nodes": 3, "max_nodes": 2},
         "Max count must be greater than or equal to min count."),
        ({"name": "q", "instance_types": ["c5.bogus"]}, "do not exist"),
        ({"name": "Bad_Queue", "instance_types": ["c5.large"]}, "Invalid name 'Bad_Queue'"),
    ],
)
def test_bad_specs_get_the_validators_message(render, validator, queue, message):
    with pytest.raises(ClusterConfigError, match="ParallelCluster rejected") as exc:
        validator.validate("c1", render(queue))
    assert message in exc.value.message
    # Findings (when pcluster lists them) keep only the errors, not its INFO notes.
    assert exc.value.details is None or all(d["level"] == "ERROR" for d in exc.value.details)


def test_schema_mode_works_offline_and_rejects_unknown_keys(render):
    schema_only = PclusterConfigValidator(mode="schema", region="us-east-1")
    config = render({"name": "q", "instance_types": ["c5.large"]})
    assert schema_only.validate("c1", config) == []
    config["HeadNode"]["Surprise"] = True
    with pytest.raises(ClusterConfigError, match="Surprise"):
        schema_only.validate("c1", config)


def _calls_of_a_dry_run(render, validator) -> list[tuple[str, str]]:
    reset_pcluster_caches()
    seen: list[tuple[str, str]] = []

    def record(call) -> bool:
        seen.append((call.service, call.operation))
        return False

    with FaultInjector(plan=record):
        validator.validate("c1", render({"name": "q", "instance_types": ["c5.large"], "max_nodes": 2}))
    return seen


def test_a_throttled_validator_is_retried_not_a_verdict(render, validator):
    # Given AWS throttling the first of ParallelCluster's lookups, beyond the SDK's retries
    calls = _calls_of_a_dry_run(render, validator)
    assert ("ec2", "DescribeInstanceTypes") in calls
    first = {"done": False}

    def throttle_once(call) -> bool:
        if call.operation == "DescribeInstanceTypes" and not first["done"]:
            first["done"] = True
            return True
        return False

    # When the same good config is validated from a cold start (a new container)
    reset_pcluster_caches()
    fresh = PclusterConfigValidator(mode="full", region="us-east-1", suppress=EMULATOR_SUPPRESSED)
    with FaultInjector(plan=throttle_once) as faults:
        warnings = fresh.validate("c1", render({"name": "q", "instance_types": ["c5.large"], "max_nodes": 2}))
    # Then the dry run was repeated and the config passed: throttling is no finding
    assert len(faults.log) == 1 and isinstance(warnings, list)


def test_a_validator_that_keeps_failing_is_a_503_never_a_400(render):
    reset_pcluster_caches()
    validator = PclusterConfigValidator(mode="full", region="us-east-1", suppress=EMULATOR_SUPPRESSED,
                                        sleep=lambda s: None)
    with FaultInjector(plan=lambda call: call.service == "ec2") as faults:
        with pytest.raises(AwsUnavailableError, match="could not validate") as refused:
            validator.validate("c1", render({"name": "q", "instance_types": ["c5.large"], "max_nodes": 2}))
    assert refused.value.http_status == 503 and faults.log
    assert not isinstance(refused.value, ClusterConfigError)


def test_a_verdict_reached_without_aws_failures_is_reused_for_the_same_config(render, validator):
    config = render({"name": "q", "instance_types": ["c5.large"], "min_nodes": 3, "max_nodes": 2})
    with pytest.raises(ClusterConfigError):
        validator.validate("c1", config)
    # The client repeats the request: the same verdict, without a second dry run
    with FaultInjector(plan=lambda call: True) as faults:
        with pytest.raises(ClusterConfigError, match="Max count"):
            validator.validate("c1", config)
    assert faults.calls == 0
