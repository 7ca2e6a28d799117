"""The cluster and job specs: our own field rules, with errors that name the field."""

import re

import pytest
from pcluster.constants import PCLUSTER_NAME_MAX_LENGTH, PCLUSTER_NAME_REGEX
from pydantic import ValidationError

from lsstctl.domain.models import Cluster, ClusterSpec, JobSpec, SharedStorageSpec, UserSpec, cluster_id


def spec(**overrides):
    data = {"name": "demo", "queues": [{"name": "q", "instance_types": ["c5.large"]}], "budget_usd": 10}
    data.update(overrides)
    return data


def error_fields(exc: pytest.ExceptionInfo) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.value.errors()}


def test_minimal_spec_gets_sensible_defaults():
    parsed = ClusterSpec.model_validate(spec())
    assert parsed.os == "alinux2023"
    assert parsed.shared_storage.mount_dir == "/shared"
    assert parsed.idle_minutes == 60 and parsed.max_lifetime_hours == 24


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "x"}, "name"),
        ({"budget_usd": 0}, "budget_usd"),
        ({"budget_usd": -5}, "budget_usd"),
        ({"stack_tag": "latest; rm -rf /"}, "stack_tag"),
        ({"idle_minutes": 1}, "idle_minutes"),
        ({"max_lifetime_hours": 0}, "max_lifetime_hours"),
        ({"queues": []}, "queues"),
        ({"queues": [{"name": "q", "instance_types": ["not a type"]}]}, "queues.0.instance_types"),
        ({"head_node_type": "huge"}, "head_node_type"),
        ({"os": "centos7"}, "os"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_fields_are_named(overrides, field):
    with pytest.raises(ValidationError) as exc:
        ClusterSpec.model_validate(spec(**overrides))
    assert field in error_fields(exc)


@pytest.mark.parametrize("tag", ["v30_0_7", "w_2026_47", "d_2026_11_02", "w_latest", "v29_1_0_rc1"])
def test_real_stack_tags_are_accepted(tag):
    assert ClusterSpec.model_validate(spec(stack_tag=tag)).stack_tag == tag


def test_fsx_capacity_must_be_lustre_sized():
    with pytest.raises(ValidationError, match="multiple of 1200"):
        SharedStorageSpec(type="fsx_lustre", size_gib=1000)
    assert SharedStorageSpec(type="fsx_lustre", size_gib=2400).size_gib == 2400


def test_storage_cannot_hide_system_directories():
    with pytest.raises(ValidationError, match="system directory"):
        SharedStorageSpec(mount_dir="/home")


def test_job_needs_exactly_one_of_command_or_pipetask():
    with pytest.raises(ValidationError, match="exactly one"):
        JobSpec.model_validate({"name": "j"})
    with pytest.raises(ValidationError, match="exactly one"):
        JobSpec.model_validate(
            {"command": "true", "pipetask": {"butler": "r", "pipeline": "p.yaml", "inputs": ["a"], "output": "o"}}
        )
    assert JobSpec.model_validate({"command": "hostname"}).cores == 1


def test_user_names_are_lowercase_words():
    assert UserSpec(name="alice-2").name == "alice-2"
    with pytest.raises(ValidationError):
        UserSpec(name="Alice")


def test_cluster_ids_keep_owners_apart():
    # an `owner-name` join would make these two one cluster
    assert cluster_id("a-b", "cd") != cluster_id("a", "b-cd")
    assert cluster_id("alice", "demo") != cluster_id("bob", "demo")
    assert cluster_id("alice", "demo") == cluster_id("alice", "demo")


@pytest.mark.parametrize("owner, name", [("ab", "cd"), ("a" * 32, "b" * 40), ("alice", "rubin-demo")])
def test_a_cluster_id_is_a_valid_parallelcluster_name(owner, name):
    # the shortest and the longest names and owners our own rules admit
    UserSpec(name=owner), ClusterSpec.model_validate(spec(name=name))
    assert re.match(PCLUSTER_NAME_REGEX % (PCLUSTER_NAME_MAX_LENGTH - 1), cluster_id(owner, name))
    assert len(cluster_id(owner, name)) >= 5  # ParallelCluster's API: 5 to 60 characters


def test_a_record_cannot_carry_another_owners_id():
    now = "2026-12-04T00:00:00Z"
    fields = dict(name="demo", owner="alice", spec=ClusterSpec.model_validate(spec()), created_at=now, updated_at=now)
    assert Cluster(**fields).id == cluster_id("alice", "demo")
    with pytest.raises(ValidationError):
        Cluster(**fields, id=cluster_id("bob", "demo"))
