"""Bad specs are rejected with ParallelCluster's own validator messages."""

from __future__ import annotations

import boto3
import pytest

from lsstctl.adapters.pcluster_validation import EMULATOR_SUPPRESSED, PclusterConfigValidator, reset_pcluster_caches
from lsstctl.domain.models import ClusterSpec, cluster_id
from lsstctl.domain.pcluster_config import render_cluster_config
from lsstctl.domain.presets import PRESETS
from lsstctl.emulator.faults import FaultInjector
from lsstctl.errors import AwsUnavailableError, ClusterConfigError
from tests.conftest import pcluster_network


@pytest.fixture
def render(aws_account):
    net = pcluster_network(boto3.Session())

    def _render(queue: dict) -> dict:
        spec = ClusterSpec.model_validate({"name": "c1", "region": "us-east-1", "queues": [queue], "budget_usd": 5})
        return render_cluster_config(
            spec,
            owner="alice",
            subnet_id=net["subnet"],
            key_name=net["key"],
            archive_bucket="archive",
            archive_prefix="alice/c1",
            metrics_policy_arn=net["metrics_policy"],
            cluster_id=cluster_id("alice", spec.name),
        )

    return _render


@pytest.fixture
def render_spec(aws_account):
    """A spec's fields (a preset's, or overrides of a one-queue spec) rendered as launched."""
    net = pcluster_network(boto3.Session())

    def _render(fields: dict) -> dict:
        data = {"name": "c1", "region": "us-east-1", "queues": [Q], "budget_usd": 5, **fields}
        spec = ClusterSpec.model_validate({k: v for k, v in data.items() if v is not None})
        return render_cluster_config(
            spec,
            owner="alice",
            subnet_id=net["subnet"],
            key_name=net["key"],
            archive_bucket="archive",
            archive_prefix="alice/c1",
            metrics_policy_arn=net["metrics_policy"],
            cluster_id=cluster_id("alice", spec.name),
        )

    return _render


@pytest.fixture
def validator() -> PclusterConfigValidator:
    reset_pcluster_caches()  # each test has its own moto account
    return PclusterConfigValidator(mode="full", region="us-east-1", suppress=EMULATOR_SUPPRESSED)


def test_a_good_config_passes_the_full_validator_set(render, validator):
    warnings = validator.validate("c1", render({"name": "q", "instance_types": ["c5.large"], "max_nodes": 2}))
    assert isinstance(warnings, list)


Q = {"name": "q", "instance_types": ["c5.large"]}

# Specs our own model accepts and only ParallelCluster's validators refuse, each with the
# message the user sees (in the 400's `message`, every finding in `details`).
BAD_SPECS = [
    ({"queues": [{**Q, "min_nodes": 3, "max_nodes": 2}]}, "Max count must be greater than or equal to min count."),
    (
        {"queues": [{**Q, "instance_types": ["c5.bogus"]}]},
        "The following supplied instance types do not exist: [c5.bogus]",
    ),
    ({"head_node_type": "t3.bogus"}, "The following supplied instance types do not exist: [t3.bogus]"),
    (
        {"queues": [{**Q, "name": "Bad_Queue"}]},
        "Invalid name 'Bad_Queue'. Name must begin with a letter and only contain lowercase letters",
    ),
    ({"queues": [{**Q, "name": "1q"}]}, "Invalid name '1q'. Name must begin with a letter"),
    ({"queues": [{**Q, "name": "q" * 30}]}, "Name can be at most 25 chars long."),
    ({"queues": [{**Q, "name": "default"}]}, "It is forbidden to use 'default' as a name."),
    ({"queues": [Q, Q]}, "Queue name q must be unique."),
    (
        {"queues": [{**Q, "instance_types": ["c5.large", "c5.xlarge"]}]},
        "Instance types listed under Compute Resource cr1 must have the same number of vCPUs ({'c5.large': 2, 'c5.xlarge': 4}).",
    ),
    ({"queues": [{**Q, "instance_types": ["c5.large", "c5.large"]}]}, "Duplicate instance type (c5.large) detected."),
    (
        {"queues": [{**Q, "instance_types": ["c6g.large"]}]},
        "The specified compute instance type (c6g.large) supports the architectures ['arm64'], none of which are "
        "compatible with the architecture supported by the head node instance type (x86_64).",
    ),
    (
        {"queues": [{**Q, "max_nodes": 1000}]},
        "Head node instance type t3.medium has 4.0 GB of memory. Please choose a head node instance type with at "
        "least 16 GB of memory to manage 1000 compute nodes.",
    ),
]


@pytest.mark.parametrize("fields, message", BAD_SPECS, ids=[f"bad{i}" for i in range(len(BAD_SPECS))])
def test_bad_specs_get_the_validators_message(render_spec, validator, fields, message):
    with pytest.raises(ClusterConfigError, match="ParallelCluster rejected") as exc:
        validator.validate("c1", render_spec(fields))
    assert message in exc.value.message
    # Findings (when pcluster lists them) keep only the errors, not its INFO notes.
    assert exc.value.details is None or all(d["level"] == "ERROR" for d in exc.value.details)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_passes_the_full_validator_set(render_spec, validator, preset):
    config = render_spec({"preset": preset, "queues": None})
    assert config["HeadNode"]["InstanceType"] == PRESETS[preset].head_node_type
    warnings = validator.validate("c1", config)
    assert isinstance(warnings, list)
    # What the presets promise: IMDSv2 only, compute scaled to zero when idle, EFS, tags
    assert config["Imds"] == {"ImdsSupport": "v2.0"} and config["HeadNode"]["Imds"] == {"Secured": True}
    assert config["Scheduling"]["SlurmSettings"]["ScaledownIdletime"] == 10
    assert [s["StorageType"] for s in config["SharedStorage"]] == ["Efs"]
    assert {t["Key"] for t in config["Tags"]} >= {"lsstctl:owner", "lsstctl:cluster", "lsstctl:project"}
    spot = preset.endswith("-spot")
    assert {q["CapacityType"] for q in config["Scheduling"]["SlurmQueues"]} == {"SPOT" if spot else "ONDEMAND"}


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
    validator = PclusterConfigValidator(
        mode="full", region="us-east-1", suppress=EMULATOR_SUPPRESSED, sleep=lambda s: None
    )
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
