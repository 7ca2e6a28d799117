"""Render a ParallelCluster v3 cluster configuration from a ClusterSpec (pure)."""

from __future__ import annotations

from typing import Any

from lsstctl.domain.models import ClusterSpec, QueueSpec

OWNER_TAG = "lsstctl:owner"
CLUSTER_TAG = "lsstctl:cluster"
PROJECT_TAG = "lsstctl:project"
PROJECT = "lsst-science-pipelines"
# Where a cluster mounts the account's stack cache (lsstctl/services/stack_cache.py).
STACK_CACHE_MOUNT = "/lsst-cache"


def _compute_resource(queue: QueueSpec) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "Name": "cr1",
        "MinCount": queue.min_nodes,
        "MaxCount": queue.max_nodes,
    }
    if len(queue.instance_types) == 1:
        resource["InstanceType"] = queue.instance_types[0]
    else:
        resource["Instances"] = [{"InstanceType": t} for t in queue.instance_types]
    return resource


def _shared_storage(spec: ClusterSpec) -> dict[str, Any]:
    storage = spec.shared_storage
    # Data is archived to S3 before deletion, so storage is deleted with the cluster:
    # a retained volume would keep billing after the user believes spend is zero.
    if storage.type == "ebs":
        settings = {"EbsSettings": {"VolumeType": "gp3", "Size": storage.size_gib, "DeletionPolicy": "Delete"}}
        kind = "Ebs"
    elif storage.type == "efs":
        settings = {"EfsSettings": {"DeletionPolicy": "Delete"}}
        kind = "Efs"
    else:
        settings = {
            "FsxLustreSettings": {
                "StorageCapacity": storage.size_gib,
                "DeploymentType": "SCRATCH_2",
                "DeletionPolicy": "Delete",
            }
        }
        kind = "FsxLustre"
    return {"MountDir": storage.mount_dir, "Name": "shared", "StorageType": kind, **settings}


def render_cluster_config(
    spec: ClusterSpec,
    *,
    owner: str,
    subnet_id: str,
    key_name: str,
    archive_bucket: str,
    archive_prefix: str,
    metrics_policy_arn: str,
    cluster_id: str,
    stack_cache_file_system_id: str | None = None,
) -> dict[str, Any]:
    """The ParallelCluster v3 config as a dict (what pcluster.lib accepts).

    The head node's credentials reach only what its own cluster needs: SSM (how the
    control plane runs commands there), its own metrics namespace (the deployment's
    head-node metrics policy), its own archive prefix; IMDSv2 only, and on the head
    node the instance credentials are for root alone (ParallelCluster's Imds/Secured)."""
    tags = [
        {"Key": OWNER_TAG, "Value": owner},
        # The id (owner and name): the head node's role carries it, and the metrics policy
        # admits that cluster's namespace only.
        {"Key": CLUSTER_TAG, "Value": cluster_id},
        {"Key": PROJECT_TAG, "Value": PROJECT},
    ]
    head: dict[str, Any] = {
        "InstanceType": spec.head_node_type,
        "Networking": {"SubnetId": subnet_id},
        "Iam": {
            # SSM Run Command is how the control plane reaches the head node.
            "AdditionalIamPolicies": [
                {"Policy": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"},
                # The queue-depth publisher behind the idle alarm: PutMetricData in this
                # cluster's namespace only (never CloudWatchAgentServerPolicy: any namespace).
                {"Policy": metrics_policy_arn},
            ],
            # Teardown archives outputs from the head node: write access to this cluster's prefix only.
            "S3Access": [{"BucketName": archive_bucket, "KeyName": f"{archive_prefix}/*", "EnableWriteAccess": True}],
        },
    }
    head["Imds"] = {"Secured": True}
    if key_name:
        head["Ssh"] = {"KeyName": key_name}
    queues = [
        {
            "Name": q.name,
            "CapacityType": "SPOT" if q.capacity_type == "spot" else "ONDEMAND",
            "ComputeResources": [_compute_resource(q)],
            "Networking": {"SubnetIds": [subnet_id]},
        }
        for q in spec.queues
    ]
    return {
        "Region": spec.region,
        "Imds": {"ImdsSupport": "v2.0"},
        "Image": {"Os": spec.os},
        "HeadNode": head,
        "Scheduling": {
            "Scheduler": "slurm",
            "SlurmSettings": {"ScaledownIdletime": 10},
            "SlurmQueues": queues,
        },
        "SharedStorage": [_shared_storage(spec)]
        + (
            [
                {
                    # The account's stack cache: an existing file system, never deleted with the cluster.
                    "MountDir": STACK_CACHE_MOUNT,
                    "Name": "stackcache",
                    "StorageType": "Efs",
                    "EfsSettings": {"FileSystemId": stack_cache_file_system_id},
                }
            ]
            if stack_cache_file_system_id
            else []
        ),
        "Tags": tags,
    }


def to_yaml(config: dict[str, Any]) -> str:
    import yaml  # here: only the engine's paths write YAML (a cold start spared the import)

    return yaml.safe_dump(config, sort_keys=False)
