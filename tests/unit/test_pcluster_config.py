"""Rendering the ParallelCluster v3 config from a spec (pure), checked by pcluster's schema."""

import pytest

from lsstctl.domain.models import ClusterSpec
from lsstctl.domain.pcluster_config import OWNER_TAG, render_cluster_config, to_yaml

METRICS_POLICY = "arn:aws:iam::123456789012:policy/lsstctl-head-node-metrics"


def render(**overrides):
    data = {
        "name": "demo",
        "region": "us-east-1",
        "queues": [
            {"name": "small", "instance_types": ["c5.large"], "min_nodes": 1, "max_nodes": 4},
            {"name": "big", "instance_types": ["r5.4xlarge", "r5a.4xlarge"], "max_nodes": 2, "capacity_type": "spot"},
        ],
        "budget_usd": 10,
    }
    data.update(overrides)
    return render_cluster_config(
        ClusterSpec.model_validate(data),
        owner="alice",
        subnet_id="subnet-0123456789abcdef0",
        key_name="k",
        archive_bucket="archive",
        archive_prefix="alice/demo",
        metrics_policy_arn=METRICS_POLICY,
        cluster_id="demo-0123456789",
    )


def test_queues_become_slurm_queues_with_counts_and_capacity():
    config = render()
    queues = {q["Name"]: q for q in config["Scheduling"]["SlurmQueues"]}
    assert queues["small"]["ComputeResources"][0] == {
        "Name": "cr1",
        "MinCount": 1,
        "MaxCount": 4,
        "InstanceType": "c5.large",
    }
    assert queues["big"]["CapacityType"] == "SPOT"
    assert queues["big"]["ComputeResources"][0]["Instances"] == [
        {"InstanceType": "r5.4xlarge"},
        {"InstanceType": "r5a.4xlarge"},
    ]


def test_owner_tag_and_ssm_access_for_the_control_plane():
    config = render()
    assert {"Key": OWNER_TAG, "Value": "alice"} in config["Tags"]
    policies = config["HeadNode"]["Iam"]["AdditionalIamPolicies"]
    assert policies == [
        {"Policy": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"},
        {"Policy": METRICS_POLICY},  # its own metrics namespace only (not CloudWatchAgentServerPolicy)
    ]
    assert config["Imds"] == {"ImdsSupport": "v2.0"} and config["HeadNode"]["Imds"] == {"Secured": True}
    # The head node may write this cluster's archive prefix, and nothing else of the bucket.
    assert config["HeadNode"]["Iam"]["S3Access"] == [
        {"BucketName": "archive", "KeyName": "alice/demo/*", "EnableWriteAccess": True}
    ]


@pytest.mark.parametrize(
    "kind, key", [("ebs", "EbsSettings"), ("efs", "EfsSettings"), ("fsx_lustre", "FsxLustreSettings")]
)
def test_storage_is_deleted_with_the_cluster_after_archive(kind, key):
    size = 1200 if kind == "fsx_lustre" else 50
    storage = render(shared_storage={"type": kind, "size_gib": size})["SharedStorage"][0]
    assert storage[key]["DeletionPolicy"] == "Delete"


def test_parallelcluster_schema_accepts_the_rendered_config():
    # ParallelCluster's own schema (offline): unknown keys or wrong shapes would fail here.
    from pcluster.schemas.cluster_schema import ClusterSchema

    config = render(shared_storage={"type": "efs"})
    ClusterSchema(cluster_name="demo").load(config)
    assert "SlurmQueues" in to_yaml(config)
