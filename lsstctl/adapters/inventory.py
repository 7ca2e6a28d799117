"""What runs, for every cluster at once: one paginated, tag-filtered call per resource kind
(never one call per cluster), grouped by ParallelCluster's cluster-name tag."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lsstctl.adapters.aws import LazyClient

NAME_TAG = "parallelcluster:cluster-name"
NODE_TYPE_TAG = "parallelcluster:node-type"
QUEUE_TAG = "parallelcluster:queue-name"
OWNER_TAG = "lsstctl:owner"
_TERMINATED_AT = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


@dataclass(frozen=True)
class Observed:
    id: str
    kind: str  # instance | volume
    cluster: str
    role: str  # head | compute | storage
    type: str
    started_at: datetime
    ended_at: datetime | None
    spot: bool = False
    size_gib: int | None = None
    owner: str | None = None  # the lsstctl:owner tag, when the resource carries it
    state: str = ""  # EC2's instance state ("" for volumes)
    zone: str = ""  # its availability zone (a spot instance's price is its zone's)
    queue: str = ""  # a compute node's Slurm queue (the scale governor caps each queue)

    @property
    def exists(self) -> bool:
        """Still there: a volume until deleted, an instance until terminated (a stopped
        instance keeps its volumes, and can be started again)."""
        return self.kind != "instance" or self.state != "terminated"


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _ended(instance: dict[str, Any], now: datetime) -> datetime | None:
    """When a stopped or terminated instance stopped billing (EC2 says it in the reason)."""
    if instance["State"]["Name"] in {"pending", "running", "stopping", "shutting-down"}:
        return None
    match = _TERMINATED_AT.search(instance.get("StateTransitionReason", ""))
    if not match:
        return now
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


class Ec2Inventory:
    ec2 = LazyClient("ec2")

    def __init__(self, ec2: Any = None):
        self.ec2 = ec2

    def observe(self, now: datetime, clusters: list[str] | None = None) -> dict[str, list[Observed]]:
        """Every cluster's resources, or those of `clusters` only (at most 200 names: one EC2
        filter's most)."""
        found: dict[str, list[Observed]] = defaultdict(list)
        if clusters is not None and not clusters:
            return {}
        has_tag = (
            [{"Name": f"tag:{NAME_TAG}", "Values": list(clusters)}]
            if clusters is not None
            else [{"Name": "tag-key", "Values": [NAME_TAG]}]
        )
        # Terminated instances are listed too (EC2 keeps them about an hour): a node that
        # lived between two ticks still bills its minute, and its end time is exact.
        # EC2's largest pages (DescribeInstances 1000, DescribeVolumes 500): few calls at thousands of nodes.
        for page in self.ec2.get_paginator("describe_instances").paginate(
            Filters=has_tag, PaginationConfig={"PageSize": 1000}
        ):
            for reservation in page["Reservations"]:
                for i in reservation["Instances"]:
                    tags = _tags(i)
                    found[tags[NAME_TAG]].append(
                        Observed(
                            id=i["InstanceId"],
                            kind="instance",
                            cluster=tags[NAME_TAG],
                            role="head" if tags.get(NODE_TYPE_TAG) == "HeadNode" else "compute",
                            type=i["InstanceType"],
                            started_at=i["LaunchTime"],
                            ended_at=_ended(i, now),
                            spot=i.get("InstanceLifecycle") == "spot",
                            owner=tags.get(OWNER_TAG),
                            state=i["State"]["Name"],
                            zone=(i.get("Placement") or {}).get("AvailabilityZone", ""),
                            queue=tags.get(QUEUE_TAG, ""),
                        )
                    )
        for page in self.ec2.get_paginator("describe_volumes").paginate(
            Filters=has_tag, PaginationConfig={"PageSize": 500}
        ):
            for v in page["Volumes"]:
                tags = _tags(v)
                found[tags[NAME_TAG]].append(
                    Observed(
                        id=v["VolumeId"],
                        kind="volume",
                        cluster=tags[NAME_TAG],
                        role="storage",
                        type=v["VolumeType"],
                        started_at=v["CreateTime"],
                        ended_at=None,
                        size_gib=int(v["Size"]),
                        owner=tags.get(OWNER_TAG),
                    )
                )
        return dict(found)


class InstanceSizes:
    """vCPUs and memory (MiB) of EC2 instance types (DescribeInstanceTypes), remembered for the
    process's life: they do not change. What a job may ask of a queue's nodes is judged by it."""

    ec2 = LazyClient("ec2")

    def __init__(self, client: Any = None):
        self.ec2 = client
        self._known: dict[str, tuple[int, int]] = {}

    def of(self, instance_types: list[str]) -> dict[str, tuple[int, int]]:
        missing = sorted(set(instance_types) - set(self._known))
        if missing:
            pages = self.ec2.get_paginator("describe_instance_types").paginate(InstanceTypes=missing)
            for page in pages:
                for info in page.get("InstanceTypes", []):
                    self._known[info["InstanceType"]] = (
                        int(info["VCpuInfo"]["DefaultVCpus"]),
                        int(info["MemoryInfo"]["SizeInMiB"]),
                    )
        return {t: self._known[t] for t in instance_types if t in self._known}
