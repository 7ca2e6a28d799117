"""The local engine leaves a cluster the way ParallelCluster does, and converges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from lsstctl.adapters.local_engine import LocalClusterEngine, fleet_table_name
from lsstctl.domain.models import ClusterSpec, cluster_id
from lsstctl.domain.pcluster_config import render_cluster_config
from tests.conftest import live_instances, pcluster_network


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def config(aws):
    net = pcluster_network(boto3.Session())
    spec = ClusterSpec.model_validate(
        {
            "name": "c1",
            "region": "us-east-1",
            "queues": [
                {"name": "small", "instance_types": ["c5.large"], "min_nodes": 2, "max_nodes": 4},
                {"name": "big", "instance_types": ["r5.xlarge"], "min_nodes": 0, "max_nodes": 2},
            ],
            "budget_usd": 5,
        }
    )
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


def node_types(cluster: str) -> list[str]:
    reservations = boto3.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:parallelcluster:cluster-name", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    return sorted(
        next(t["Value"] for t in i["Tags"] if t["Key"] == "parallelcluster:node-type")
        for r in reservations
        for i in r["Instances"]
    )


def test_create_reports_progress_then_completes(config):
    clock = Clock()
    engine = LocalClusterEngine(provision_seconds=30, clock=clock)
    assert engine.create_cluster("c1", config).status == "CREATE_IN_PROGRESS"
    # Past the provisioning time however long the create took on a loaded machine (EC2's
    # launch time is real time; the engine's clock is this one).
    clock.now = datetime.now(UTC) + timedelta(seconds=31)
    described = engine.describe_cluster("c1")
    assert described.status == "CREATE_COMPLETE" and described.fleet_status == "RUNNING"
    assert described.head_node_instance_id
    # A head node plus MinCount compute nodes, carrying ParallelCluster's and our tags.
    assert node_types("c1") == ["Compute", "Compute", "HeadNode"]
    stack = boto3.client("cloudformation").describe_stacks(StackName="c1")["Stacks"][0]
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert tags["parallelcluster:cluster-name"] == "c1" and tags["lsstctl:owner"] == "alice"


def test_repeated_create_converges(config):
    engine = LocalClusterEngine()
    engine.create_cluster("c1", config)
    engine.create_cluster("c1", config)
    assert node_types("c1") == ["Compute", "Compute", "HeadNode"]


def test_stop_fleet_then_delete_leaves_nothing(config):
    engine = LocalClusterEngine()
    engine.create_cluster("c1", config)
    stopped = engine.stop_compute_fleet("c1")
    assert stopped.fleet_status == "STOPPED" and node_types("c1") == ["HeadNode"]
    assert engine.delete_cluster("c1").status == "DELETE_IN_PROGRESS"
    assert engine.describe_cluster("c1").status == "NOT_FOUND"
    assert live_instances("c1") == []
    assert fleet_table_name("c1") not in boto3.client("dynamodb").list_tables()["TableNames"]
    # Deleting again is harmless (teardown steps may be retried).
    assert engine.delete_cluster("c1").status == "DELETE_IN_PROGRESS"


def test_parallelclusters_own_library_accepts_the_materialised_cluster(config):
    # The production engine (pcluster.lib) must be testable against the same emulator.
    import pcluster.lib as pc
    from pcluster.aws.aws_api import AWSApi

    LocalClusterEngine().create_cluster("c1", config)
    AWSApi.reset()
    described = pc.describe_cluster(cluster_name="c1", region="us-east-1")
    assert described["clusterName"] == "c1"
    assert described["computeFleetStatus"] == "RUNNING"
    assert described["version"] == "3.16.1"
