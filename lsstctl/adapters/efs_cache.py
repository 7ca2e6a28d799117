"""The stack cache's storage: one EFS file system per account and region, outliving every
cluster, where each installed lsst_distrib tag stays (lsstctl/services/stack_cache.py).

Create-or-converge: the file system is found by its tag (and created with a fixed creation
token, which AWS itself makes idempotent); a mount target is made in the cluster subnet's
availability zone, behind a security group that admits NFS (2049) from the subnet's VPC only.
AWS makes both available after a few seconds to a minute and a half: until then `ensure`
raises TransientError and the launch step is retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient
from lsstctl.errors import TransientError

CACHE_TAG = "lsstctl:stack-cache"
CREATION_TOKEN = "lsstctl-stack-cache"
SECURITY_GROUP = "lsstctl-stack-cache-nfs"
# How long a container trusts a cache it confirmed (the reconciler retires one only after
# weeks unused, and never while a cluster uses it).
CONFIRMED_SECONDS = 300


@dataclass(frozen=True)
class CacheVolume:
    file_system_id: str
    size_bytes: int
    created_at: Any  # datetime


def _volume(fs: dict[str, Any]) -> CacheVolume:
    return CacheVolume(
        file_system_id=fs["FileSystemId"],
        size_bytes=int(fs.get("SizeInBytes", {}).get("Value", 0)),
        created_at=fs.get("CreationTime"),
    )


class EfsStackCache:
    efs = LazyClient("efs")
    ec2 = LazyClient("ec2")

    def __init__(self, *, efs: Any = None, ec2: Any = None):
        self.efs = efs
        self.ec2 = ec2
        self._confirmed: dict[str, tuple[float, CacheVolume]] = {}

    def find(self) -> CacheVolume | None:
        found = self._find()
        return _volume(found) if found else None

    def _find(self) -> dict[str, Any] | None:
        for page in self.efs.get_paginator("describe_file_systems").paginate():
            for fs in page["FileSystems"]:
                tags = {t["Key"]: t["Value"] for t in fs.get("Tags", [])}
                if tags.get(CACHE_TAG) == "true" and fs.get("LifeCycleState") not in {"deleting", "deleted"}:
                    return fs
        return None

    def ensure(self, subnet_id: str) -> CacheVolume:
        """The cache, reachable from `subnet_id` (created on first use). Once confirmed, it is
        remembered for CONFIRMED_SECONDS in this container: a launch step that AWS failed is
        retried from its start, and every call it repeats is another chance to fail."""
        remembered = self._confirmed.get(subnet_id)
        if remembered and time.monotonic() - remembered[0] < CONFIRMED_SECONDS:
            return remembered[1]
        fs = self._find() or self._create()
        if fs["LifeCycleState"] != "available":
            raise TransientError(f"stack cache {fs['FileSystemId']} is {fs['LifeCycleState']}; retrying")
        self._ensure_mount_target(fs["FileSystemId"], subnet_id)
        volume = _volume(fs)
        self._confirmed[subnet_id] = (time.monotonic(), volume)
        return volume

    def forget(self) -> None:
        """Confirm the cache with AWS again on the next `ensure` (as a new container would)."""
        self._confirmed.clear()

    def delete(self, file_system_id: str) -> bool:
        """Remove the cache (its mount targets first); True once it is gone."""
        self.forget()
        targets = self.efs.describe_mount_targets(FileSystemId=file_system_id)["MountTargets"]
        for target in targets:
            self.efs.delete_mount_target(MountTargetId=target["MountTargetId"])
        if targets:
            return False  # AWS takes a moment to release them; the next pass deletes the file system
        try:
            self.efs.delete_file_system(FileSystemId=file_system_id)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "FileSystemNotFound":
                return True
            if code == "FileSystemInUse":
                return False
            raise
        return True

    # helpers ------------------------------------------------------------------------
    def _create(self) -> dict[str, Any]:
        try:
            return self.efs.create_file_system(
                CreationToken=CREATION_TOKEN,
                Encrypted=True,
                PerformanceMode="generalPurpose",
                Tags=[
                    {"Key": CACHE_TAG, "Value": "true"},
                    {"Key": "Name", "Value": "lsstctl stack cache"},
                    {"Key": "lsstctl:project", "Value": "lsst-science-pipelines"},
                ],
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "FileSystemAlreadyExists":
                raise
            return self.efs.describe_file_systems(CreationToken=CREATION_TOKEN)["FileSystems"][0]

    def _mount_target(self, file_system_id: str, subnet: dict[str, Any]) -> dict[str, Any] | None:
        for target in self.efs.describe_mount_targets(FileSystemId=file_system_id)["MountTargets"]:
            if (
                target["SubnetId"] == subnet["SubnetId"]
                or target.get("AvailabilityZoneName") == subnet["AvailabilityZone"]
            ):
                return target
        return None

    def _ensure_mount_target(self, file_system_id: str, subnet_id: str) -> None:
        subnet = self.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
        target = self._mount_target(file_system_id, subnet)
        if target is None:
            group = self._security_group(subnet["VpcId"])
            try:
                self.efs.create_mount_target(FileSystemId=file_system_id, SubnetId=subnet_id, SecurityGroups=[group])
            except ClientError as error:
                if error.response["Error"]["Code"] != "MountTargetConflict":
                    raise
            target = self._mount_target(file_system_id, subnet)
        state = target["LifeCycleState"] if target else "missing"
        if state != "available":
            raise TransientError(f"stack cache mount target is {state}; retrying")

    def _security_group(self, vpc_id: str) -> str:
        found = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [SECURITY_GROUP]}, {"Name": "vpc-id", "Values": [vpc_id]}]
        )["SecurityGroups"]
        if found:
            return found[0]["GroupId"]
        cidr = self.ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
        try:
            group = self.ec2.create_security_group(
                GroupName=SECURITY_GROUP,
                VpcId=vpc_id,
                Description="lsstctl stack cache: NFS from the cluster VPC",
                TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": CACHE_TAG, "Value": "true"}]}],
            )["GroupId"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "InvalidGroup.Duplicate":
                raise
            # A concurrent launch made it first; its ingress rule may not be there yet.
            raise TransientError("the stack cache's security group is being created; retrying") from error
        self.ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "IpRanges": [{"CidrIp": cidr}]}],
        )
        return group
