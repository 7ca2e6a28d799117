"""The stack cache: one EFS file system per account and region that outlives clusters,
created on first use and converging, mounted by every cluster, metered, and retired by the
reconciler when nobody used it for its retention period."""

from __future__ import annotations

import boto3
import pytest

from lsstctl import wiring
from lsstctl.adapters.efs_cache import CACHE_TAG, SECURITY_GROUP, EfsStackCache
from lsstctl.adapters.pcluster_validation import EMULATOR_SUPPRESSED, PclusterConfigValidator, reset_pcluster_caches
from lsstctl.domain.models import ClusterSpec, ClusterState, cluster_id, iso
from lsstctl.domain.pcluster_config import STACK_CACHE_MOUNT, render_cluster_config
from lsstctl.errors import TransientError
from lsstctl.services import clusters, costs, reconciler, stack_cache
from tests.conftest import pcluster_network
from tests.integration.plane import ALICE, ready


def answering(client, operation: str, rewrite):
    """`client` (moto's), with one operation's answer rewritten as AWS would give it at a
    moment moto does not show (a race, a resource still being made)."""

    class Rewritten:
        def __getattr__(self, name):
            call = getattr(client, name)
            return (lambda **kwargs: rewrite(call(**kwargs))) if name == operation else call

    return Rewritten()


def test_the_cache_is_created_once_reachable_from_the_cluster_subnet_only_by_nfs(aws_account):
    net = pcluster_network(boto3.Session())
    cache = EfsStackCache()
    first = cache.ensure(net["subnet"])
    again = cache.ensure(net["subnet"])
    assert first.file_system_id == again.file_system_id
    efs, ec2 = boto3.client("efs"), boto3.client("ec2")
    systems = efs.describe_file_systems()["FileSystems"]
    assert len(systems) == 1 and systems[0]["Encrypted"]
    assert {"Key": CACHE_TAG, "Value": "true"} in systems[0]["Tags"]
    targets = efs.describe_mount_targets(FileSystemId=first.file_system_id)["MountTargets"]
    assert [t["SubnetId"] for t in targets] == [net["subnet"]]
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [SECURITY_GROUP]}])["SecurityGroups"]
    vpc = ec2.describe_vpcs(VpcIds=[group[0]["VpcId"]])["Vpcs"][0]
    assert [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group[0]["IpPermissions"]] == [
        (2049, 2049, [vpc["CidrBlock"]])
    ]

    # And ParallelCluster's validators accept a cluster that mounts it
    spec = ClusterSpec.model_validate({"preset": "small", "name": "c1", "region": "us-east-1", "budget_usd": 10})
    config = render_cluster_config(
        spec,
        owner="alice",
        subnet_id=net["subnet"],
        key_name=net["key"],
        archive_bucket="archive",
        archive_prefix="alice/c1",
        metrics_policy_arn=net["metrics_policy"],
        cluster_id=cluster_id("alice", "c1"),
        stack_cache_file_system_id=first.file_system_id,
    )
    mounted = [s for s in config["SharedStorage"] if s["Name"] == "stackcache"]
    assert mounted == [
        {
            "MountDir": STACK_CACHE_MOUNT,
            "Name": "stackcache",
            "StorageType": "Efs",
            "EfsSettings": {"FileSystemId": first.file_system_id},
        }
    ]
    reset_pcluster_caches()
    validator = PclusterConfigValidator(mode="full", region="us-east-1", suppress=EMULATOR_SUPPRESSED)
    assert isinstance(validator.validate("c1", config), list)


def test_two_launches_making_the_cache_at_once_get_one_cache(aws):
    net = pcluster_network(boto3.Session())
    # EC2 as a second launch sees it: the first made the group between our look and our create
    racing = answering(boto3.client("ec2"), "describe_security_groups", lambda a: {**a, "SecurityGroups": []})
    EfsStackCache().ensure(net["subnet"])  # the first launch
    boto3.client("efs").delete_mount_target(
        MountTargetId=boto3.client("efs").describe_mount_targets(FileSystemId=EfsStackCache().find().file_system_id)[
            "MountTargets"
        ][0]["MountTargetId"]
    )
    with pytest.raises(TransientError, match="security group"):
        EfsStackCache(ec2=racing).ensure(net["subnet"])
    again = EfsStackCache().ensure(net["subnet"])  # the retry converges on the one cache
    assert [f["FileSystemId"] for f in boto3.client("efs").describe_file_systems()["FileSystems"]] == [
        again.file_system_id
    ]


def test_a_confirmed_cache_costs_a_retried_launch_step_no_more_calls(aws):
    from lsstctl.emulator.faults import FaultInjector

    net = pcluster_network(boto3.Session())
    cache = EfsStackCache()
    first = cache.ensure(net["subnet"])
    with FaultInjector(plan=lambda call: True) as faults:  # AWS failing everything
        assert cache.ensure(net["subnet"]) == first
    assert faults.calls == 0


def test_a_mount_target_not_yet_available_is_retried_not_a_failure(aws):
    net = pcluster_network(boto3.Session())
    # EFS as AWS answers right after create_mount_target: `creating` for a while
    creating = answering(
        boto3.client("efs"),
        "describe_mount_targets",
        lambda a: {**a, "MountTargets": [{**t, "LifeCycleState": "creating"} for t in a["MountTargets"]]},
    )
    with pytest.raises(TransientError, match="creating"):
        EfsStackCache(efs=creating).ensure(net["subnet"])
    assert EfsStackCache().ensure(net["subnet"]).file_system_id  # the retry converges


def test_launches_mount_the_cache_and_the_report_counts_minutes_saved_and_cost(plane):
    # Given two clusters through the launch steps (SSM in moto: installs, no hits)
    first = ready("one")
    second = ready("two")
    assert first.stack_cache_id and first.stack_cache_id == second.stack_cache_id
    deps = wiring.deps()
    # And a third launch whose install found its tag in the cache (a hit)
    stack_cache.record_install(deps, second, skipped=True, seconds=12)
    report = costs.costs_by_owner(deps, ALICE)["stack_cache"]
    assert (report["installs"], report["hits"]) == (2, 1)
    tags = report["tags"]
    assert [t["tag"] for t in tags] == ["w_2026_47"]
    # The hit saved what this tag's installs took on average
    average = deps.store.list_stack_cache_tags()[0]["install_seconds_total"] / 2 / 60
    assert report["install_minutes_saved"] == pytest.approx(average, abs=0.1)
    assert report["usd_per_month"] == pytest.approx(
        report["size_gib"] * deps.catalog.efs_gb_month("us-east-1"), abs=0.01
    )


def test_the_reconciler_retires_a_cache_nobody_used_for_its_retention_period(plane):
    cluster = ready("one")
    deps = wiring.deps()
    fs = cluster.stack_cache_id
    # While the cluster lives, the cache stays, however old its last use
    plane.advance(45 * 86400)
    assert stack_cache.retire_if_unused(wiring.deps(), plane(), deps.store.list_billing_clusters()) is None
    # When the cluster is gone and 31 days pass, the next passes delete it (mount targets first)
    clusters.delete_cluster(deps, ALICE, "one")
    deps.store.transition(
        cluster.id, to=ClusterState.DELETED, reason="teardown done", allowed_from=frozenset(ClusterState)
    )
    deps.store.record_stack_cache_use("w_2026_47", file_system_id=fs, at=iso(plane()), install_seconds=None)
    plane.advance(29 * 86400)
    assert stack_cache.retire_if_unused(wiring.deps(), plane(), []) is None  # within retention
    plane.advance(2 * 86400)
    findings = [
        f
        for _ in range(2)
        for f in reconciler.reconcile(wiring.deps())["findings"]
        if f["kind"] == "stack_cache_unused"
    ]
    assert findings and findings[-1]["deleted"] is True
    assert boto3.client("efs").describe_file_systems()["FileSystems"] == []
    assert deps.store.list_stack_cache_tags() == []
