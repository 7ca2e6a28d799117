"""The local ClusterEngine: materialises a cluster inside the emulator the way
ParallelCluster leaves it in an account, so the same describe/delete calls apply.

A cluster is: a CloudFormation stack named after it and tagged
`parallelcluster:version` / `parallelcluster:cluster-name`; the `parallelcluster-<name>`
DynamoDB table holding the compute fleet status; a head node and MinCount compute nodes as
EC2 instances with ParallelCluster's tags, and an EBS volume for EBS shared storage. The
cluster reports CREATE_IN_PROGRESS until `provision_seconds` after its head node launched,
then CREATE_COMPLETE; deletion takes `delete_seconds` (the cost simulation uses both, on
its own clock).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient
from lsstctl.ports import EngineCluster

PCLUSTER_VERSION = "3.16.1"
NAME_TAG = "parallelcluster:cluster-name"
NODE_TYPE_TAG = "parallelcluster:node-type"
QUEUE_TAG = "parallelcluster:queue-name"
RESOURCE_TAG = "parallelcluster:compute-resource-name"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def stack_template(name: str) -> dict[str, Any]:
    """A stack needs one resource; a parameter costs nothing and moto creates it."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "AWS ParallelCluster cluster (materialised by the lsstctl local engine)",
        "Resources": {
            "ClusterMarker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {
                    "Name": f"/lsstctl/local-engine/{name}",
                    "Type": "String",
                    "Value": f"aws-parallelcluster {PCLUSTER_VERSION}",
                },
            }
        },
    }


def _missing(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ResourceNotFoundException"


def fleet_table_name(cluster: str) -> str:
    return f"parallelcluster-{cluster}"


class LocalClusterEngine:
    ec2 = LazyClient("ec2")
    cloudformation = LazyClient("cloudformation")
    dynamodb = LazyClient("dynamodb")

    def __init__(
        self,
        *,
        provision_seconds: float = 0,
        delete_seconds: float = 0,
        clock: Callable[[], datetime] | None = None,
        ec2: Any = None,
        cloudformation: Any = None,
        dynamodb: Any = None,
    ):
        self._provision_seconds = provision_seconds
        self._delete_seconds = delete_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self.ec2 = ec2
        self.cloudformation = cloudformation
        self.dynamodb = dynamodb

    # ClusterEngine ------------------------------------------------------------------
    def create_cluster(self, name: str, config: dict[str, Any]) -> EngineCluster:
        tags = {t["Key"]: t["Value"] for t in config.get("Tags", [])}
        self._ensure_fleet_table(name)
        self._remember_queues(name, config)
        self._ensure_stack(name, config, tags)
        self._ensure_head_node(name, config, tags)
        self._ensure_shared_volume(name, config, tags)
        self._ensure_min_compute(name, config, tags)
        return self.describe_cluster(name)

    def list_clusters(self) -> list[EngineCluster]:
        """Every cluster this engine materialised: the stacks carrying its name tag."""
        found = []
        for page in self.cloudformation.get_paginator("describe_stacks").paginate():
            for stack in page["Stacks"]:
                tags = {t["Key"]: t["Value"] for t in stack.get("Tags", [])}
                if NAME_TAG in tags and stack["StackStatus"] != "DELETE_COMPLETE":
                    found.append(EngineCluster(name=tags[NAME_TAG], status=stack["StackStatus"]))
        return found

    def describe_cluster(self, name: str) -> EngineCluster:
        due = self._deletion_due(name)
        if due is not None:
            if self._clock() < due:
                return EngineCluster(name=name, status="DELETE_IN_PROGRESS")
            self._delete_now(name)
        stack = self._stack(name)
        if stack is None or stack["StackStatus"] == "DELETE_COMPLETE":
            return EngineCluster(name=name, status="NOT_FOUND")
        if stack["StackStatus"].startswith("DELETE"):
            return EngineCluster(name=name, status=stack["StackStatus"])
        heads = self._instances(name, node_type="HeadNode")
        if not heads:
            return EngineCluster(name=name, status="CREATE_IN_PROGRESS", fleet_status=self._fleet_status(name))
        head = heads[0]
        elapsed = (self._clock() - head["LaunchTime"]).total_seconds()
        status = "CREATE_COMPLETE" if elapsed >= self._provision_seconds else "CREATE_IN_PROGRESS"
        return EngineCluster(
            name=name,
            status=status,
            fleet_status=self._fleet_status(name),
            head_node_instance_id=head["InstanceId"],
        )

    def stop_compute_fleet(self, name: str) -> EngineCluster:
        if self._stack(name) is None:
            return EngineCluster(name=name, status="NOT_FOUND")
        self._set_fleet_status(name, "STOP_REQUESTED")
        compute = [i["InstanceId"] for i in self._instances(name, node_type="Compute")]
        if compute:
            self.ec2.terminate_instances(InstanceIds=compute)
        self._set_fleet_status(name, "STOPPED")
        return self.describe_cluster(name)

    def stop_head_node(self, name: str) -> EngineCluster:
        heads = [
            i["InstanceId"] for i in self._instances(name, node_type="HeadNode") if i["State"]["Name"] != "stopped"
        ]
        if heads:
            self.ec2.stop_instances(InstanceIds=heads)
        return self.describe_cluster(name)

    def start_head_node(self, name: str) -> EngineCluster:
        heads = [
            i["InstanceId"] for i in self._instances(name, node_type="HeadNode") if i["State"]["Name"] == "stopped"
        ]
        if heads:
            self.ec2.start_instances(InstanceIds=heads)
        return self.describe_cluster(name)

    def set_compute_nodes(self, name: str, queue: str, instance_type: str, count: int) -> int:
        """Scale a queue's running compute nodes to `count`, as ParallelCluster's clustermgtd
        does when Slurm resumes or suspends nodes (the emulator's job patterns use it).
        Returns the number running afterwards; a stopped fleet launches nothing."""
        running = self._instances(name, node_type="Compute", queue=queue)
        if count < len(running):
            self.ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in running[count:]])
            return count
        if count > len(running) and self._fleet_status(name) == "RUNNING":
            head = self._instances(name, node_type="HeadNode")[0]
            tags = {t["Key"]: t["Value"] for t in head.get("Tags", []) if not t["Key"].startswith("parallelcluster:")}
            tags.pop("Name", None)
            self.ec2.run_instances(
                ImageId=head["ImageId"],
                InstanceType=instance_type,
                MinCount=count - len(running),
                MaxCount=count - len(running),
                SubnetId=head["SubnetId"],
                # A SPOT queue's nodes are spot instances, as ParallelCluster launches them.
                **({"InstanceMarketOptions": {"MarketType": "spot"}} if self._spot_queue(name, queue) else {}),
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": k, "Value": v}
                            for k, v in {
                                **tags,
                                NAME_TAG: name,
                                NODE_TYPE_TAG: "Compute",
                                QUEUE_TAG: queue,
                                RESOURCE_TAG: "cr1",
                                "Name": "Compute",
                            }.items()
                        ],
                    }
                ],
            )
            return count
        return len(running)

    def delete_cluster(self, name: str) -> EngineCluster:
        if self._delete_seconds > 0 and self._stack(name) is not None:
            if self._deletion_due(name) is None:
                self._put_engine_item(name, "LOCAL_DELETION", {"requested_at": {"S": self._clock().isoformat()}})
            return EngineCluster(name=name, status="DELETE_IN_PROGRESS")
        self._delete_now(name)
        return EngineCluster(name=name, status="DELETE_IN_PROGRESS")

    def _deletion_due(self, name: str) -> datetime | None:
        try:
            item = self.dynamodb.get_item(TableName=fleet_table_name(name), Key={"Id": {"S": "LOCAL_DELETION"}}).get(
                "Item"
            )
        except ClientError as error:
            if _missing(error):
                return None
            raise  # a throttled read is not "no deletion pending"
        if not item:
            return None
        return datetime.fromisoformat(item["requested_at"]["S"]) + timedelta(seconds=self._delete_seconds)

    def _put_engine_item(self, name: str, key: str, attributes: dict[str, Any]) -> None:
        self.dynamodb.put_item(TableName=fleet_table_name(name), Item={"Id": {"S": key}, **attributes})

    def _delete_now(self, name: str) -> None:
        instances = [i["InstanceId"] for i in self._instances(name)]
        if instances:
            self.ec2.terminate_instances(InstanceIds=instances)
        for volume in self._volumes(name):
            self.ec2.delete_volume(VolumeId=volume["VolumeId"])
        if self._stack(name) is not None:
            self.cloudformation.delete_stack(StackName=name)
        try:
            self.dynamodb.delete_table(TableName=fleet_table_name(name))
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise

    # helpers ------------------------------------------------------------------------
    def _stack(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self.cloudformation.describe_stacks(StackName=name)["Stacks"]
        except ClientError as error:
            if "does not exist" in error.response["Error"].get("Message", ""):
                return None
            raise
        return stacks[0] if stacks else None

    def _ensure_stack(self, name: str, config: dict[str, Any], tags: dict[str, str]) -> None:
        if self._stack(name) is not None:
            return
        stack_tags = {**tags, "parallelcluster:version": PCLUSTER_VERSION, NAME_TAG: name}
        self.cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(stack_template(name)),
            Tags=[{"Key": k, "Value": v} for k, v in stack_tags.items()],
        )

    def _ensure_fleet_table(self, name: str) -> None:
        ddb = self.dynamodb
        try:
            ddb.create_table(
                TableName=fleet_table_name(name),
                AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
            return
        self._set_fleet_status(name, "RUNNING")

    def _remember_queues(self, name: str, config: dict[str, Any]) -> None:
        """Each queue's capacity type, which clustermgtd reads from the cluster's config
        when it starts nodes (`set_compute_nodes`)."""
        queues = {q["Name"]: {"S": q.get("CapacityType", "ONDEMAND")} for q in config["Scheduling"]["SlurmQueues"]}
        self._put_engine_item(name, "QUEUES", {"CapacityTypes": {"M": queues}})

    def _spot_queue(self, name: str, queue: str) -> bool:
        item = self.dynamodb.get_item(TableName=fleet_table_name(name), Key={"Id": {"S": "QUEUES"}}).get("Item") or {}
        return item.get("CapacityTypes", {}).get("M", {}).get(queue, {}).get("S") == "SPOT"

    def _set_fleet_status(self, name: str, status: str) -> None:
        self.dynamodb.put_item(
            TableName=fleet_table_name(name),
            Item={
                "Id": {"S": "COMPUTE_FLEET"},
                "Data": {
                    "M": {
                        "status": {"S": status},
                        "lastStatusUpdatedTime": {"S": self._clock().strftime("%Y-%m-%d %H:%M:%S.%f+00:00")},
                    }
                },
            },
        )

    def _fleet_status(self, name: str) -> str | None:
        try:
            item = self.dynamodb.get_item(TableName=fleet_table_name(name), Key={"Id": {"S": "COMPUTE_FLEET"}}).get(
                "Item"
            )
        except ClientError as error:
            if _missing(error):
                return None
            raise
        return item["Data"]["M"]["status"]["S"] if item else None

    def _instances(self, name: str, *, node_type: str | None = None, queue: str | None = None) -> list[dict[str, Any]]:
        filters = [
            {"Name": f"tag:{NAME_TAG}", "Values": [name]},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
        if node_type:
            filters.append({"Name": f"tag:{NODE_TYPE_TAG}", "Values": [node_type]})
        if queue:
            filters.append({"Name": f"tag:{QUEUE_TAG}", "Values": [queue]})
        found: list[dict[str, Any]] = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                found += reservation["Instances"]
        return found

    def _image_id(self, config: dict[str, Any]) -> str:
        os_name = config.get("Image", {}).get("Os", "alinux2023")
        flavour = {"alinux2023": "amzn2023"}.get(os_name, os_name)
        images = self.ec2.describe_images(
            Owners=["amazon"],
            Filters=[{"Name": "name", "Values": [f"aws-parallelcluster-{PCLUSTER_VERSION}-{flavour}-*"]}],
        )["Images"]
        if not images:
            raise RuntimeError(f"no ParallelCluster {PCLUSTER_VERSION} AMI for {os_name} in this region")
        return sorted(images, key=lambda i: i.get("CreationDate", ""))[-1]["ImageId"]

    def _run(
        self,
        *,
        config: dict[str, Any],
        instance_type: str,
        subnet: str,
        count: int,
        tags: dict[str, str],
        spot: bool = False,
    ) -> None:
        self.ec2.run_instances(
            ImageId=self._image_id(config),
            InstanceType=instance_type,
            MinCount=count,
            MaxCount=count,
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
            # A SPOT queue's nodes are spot instances, as ParallelCluster launches them.
            **({"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}),
        )

    def _ensure_head_node(self, name: str, config: dict[str, Any], tags: dict[str, str]) -> None:
        if self._instances(name, node_type="HeadNode"):
            return
        head = config["HeadNode"]
        self._run(
            config=config,
            instance_type=head["InstanceType"],
            subnet=head["Networking"]["SubnetId"],
            count=1,
            tags={**tags, NAME_TAG: name, NODE_TYPE_TAG: "HeadNode", "Name": "HeadNode"},
        )

    def _volumes(self, name: str) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_volumes").paginate(
            Filters=[{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
        )
        return [v for page in pages for v in page["Volumes"]]

    def _ensure_shared_volume(self, name: str, config: dict[str, Any], tags: dict[str, str]) -> None:
        """ParallelCluster creates a tagged EBS volume for EBS shared storage."""
        for storage in config.get("SharedStorage", []):
            if storage["StorageType"] != "Ebs" or self._volumes(name):
                continue
            subnet = self.ec2.describe_subnets(SubnetIds=[config["HeadNode"]["Networking"]["SubnetId"]])["Subnets"][0]
            settings = storage["EbsSettings"]
            volume_tags = {**tags, NAME_TAG: name, "parallelcluster:volume": storage["Name"]}
            self.ec2.create_volume(
                AvailabilityZone=subnet["AvailabilityZone"],
                Size=settings["Size"],
                VolumeType=settings.get("VolumeType", "gp3"),
                TagSpecifications=[
                    {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in volume_tags.items()]}
                ],
            )

    def _ensure_min_compute(self, name: str, config: dict[str, Any], tags: dict[str, str]) -> None:
        for queue in config["Scheduling"]["SlurmQueues"]:
            for resource in queue["ComputeResources"]:
                missing = resource.get("MinCount", 0) - len(
                    self._instances(name, node_type="Compute", queue=queue["Name"])
                )
                if missing <= 0:
                    continue
                itype = resource.get("InstanceType") or resource["Instances"][0]["InstanceType"]
                self._run(
                    config=config,
                    instance_type=itype,
                    subnet=queue["Networking"]["SubnetIds"][0],
                    count=missing,
                    spot=queue.get("CapacityType") == "SPOT",
                    tags={
                        **tags,
                        NAME_TAG: name,
                        NODE_TYPE_TAG: "Compute",
                        QUEUE_TAG: queue["Name"],
                        RESOURCE_TAG: resource["Name"],
                        "Name": "Compute",
                    },
                )
