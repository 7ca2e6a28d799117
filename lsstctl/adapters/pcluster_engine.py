"""The production ClusterEngine: AWS ParallelCluster v3 through its Python library
(`pcluster.lib`), the supported engine; we do not manage clusters ourselves.

- create: `create_cluster` without `wait` (the launch workflow polls), rollback off so that
  a CREATE_FAILED stack keeps its events for the reason, and teardown deletes it; a
  cluster that already exists converges (a retried step).
- describe: `clusterStatus` and `computeFleetStatus` as ParallelCluster reports them; a
  missing stack is NOT_FOUND; a CREATE_FAILED cluster carries ParallelCluster's failure
  code and reason (read from its stack events).
- fleet stop: `update_compute_fleet(status=STOP_REQUESTED)`.
- delete: `delete_cluster`; once the stack is gone, anything still tagged with the cluster's
  name (compute nodes clustermgtd launched, a head node or volume a failed deletion left)
  is removed too (`delete_cluster_instances(force=True)`, then EC2), as the port promises.
- errors: ParallelCluster's 429 and 5xx, and any transient AWS failure behind them, are
  AwsUnavailableError (the workflows retry); a 400 on create is the user's config
  (ClusterConfigError with every validator message); the rest is AwsError (permanent).

The library needs Node.js for create (CDK); describe, fleet and delete do not. On AWS it
runs in its own Lambda on ParallelCluster's layer (infra/control-plane.yaml); locally it
runs against the emulator for everything moto can follow (tests/integration/
test_engine_contract.py says what that is).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from lsstctl.adapters.aws import LazyClient, classify
from lsstctl.adapters.pcluster_validation import ensure_event_loop, field_of, findings_error
from lsstctl.errors import AwsError, AwsUnavailableError, ConflictError, ControlPlaneError
from lsstctl.ports import EngineCluster

NAME_TAG = "parallelcluster:cluster-name"
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]
# The cluster statuses in which ParallelCluster has a compute fleet to stop.
FLEET_STATES = frozenset({"CREATE_COMPLETE", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_FAILED"})


class _NotFound(Exception):
    """ParallelCluster's 404: the cluster's stack does not exist."""


def _call(operation: str, function: Callable[..., Any], **kwargs: Any) -> Any:
    """One pcluster.lib call, its failures put into the control plane's taxonomy."""
    from pcluster.api.errors import ParallelClusterApiException

    ensure_event_loop()
    try:
        # pcluster.lib coerces every argument it is given: an absent one is not passed as None.
        return function(**{k: v for k, v in kwargs.items() if v is not None})
    except ParallelClusterApiException as error:
        status = int(getattr(error, "code", 0) or 0)
        message = str(field_of(error.content, "message") or type(error).__name__)
        if status == 404:
            raise _NotFound(message) from error
        behind = classify(error)  # an AWS failure ParallelCluster wrapped (AccessDenied, throttling...)
        if isinstance(behind, AwsUnavailableError) or status == 429 or (status >= 500 and behind is None):
            raise AwsUnavailableError(
                f"ParallelCluster {operation}: {message}",
                aws_code=getattr(behind, "aws_code", None) or str(status),
                operation=operation,
                retry_after_seconds=2 if status == 429 else None,
            ) from error
        if status == 400 and field_of(error.content, "configuration_validation_errors"):
            raise findings_error(error.content) from error
        if status == 409:
            raise ConflictError(f"ParallelCluster {operation}: {message}") from error
        raise AwsError(
            f"ParallelCluster {operation}: {message}",
            aws_code=getattr(behind, "aws_code", None) or str(status or "error"),
            operation=operation,
        ) from error
    except ControlPlaneError:
        raise
    except Exception as error:  # an AWS failure on a path ParallelCluster did not wrap
        mapped = classify(error)
        if mapped is None:
            raise
        raise mapped from error


class ParallelClusterEngine:
    ec2 = LazyClient("ec2")

    def __init__(self, *, region: str, suppress_validators: Iterable[str] = (), ec2: Any = None):
        self._region = region
        self._suppress = list(suppress_validators)
        self.ec2 = ec2

    @staticmethod
    def _lib() -> Any:
        import pcluster.lib as pc

        return pc

    def _region_env(self) -> None:
        # pcluster reads its region from the environment as well as from the argument.
        os.environ.setdefault("AWS_DEFAULT_REGION", self._region)

    # ClusterEngine ------------------------------------------------------------------
    def create_cluster(self, name: str, config: dict[str, Any]) -> EngineCluster:
        existing = self.describe_cluster(name)
        if existing.status != "NOT_FOUND":
            return existing  # a retried step: the cluster it asked for is there
        with suppress(ConflictError):  # created by a concurrent attempt between our describe and create
            _call(
                "create_cluster",
                self._lib().create_cluster,
                cluster_name=name,
                cluster_configuration=config,
                region=self._region,
                suppress_validators=self._suppress or None,
                validation_failure_level="ERROR",
                rollback_on_failure=False,
                wait=False,
            )
        return self.describe_cluster(name)

    def describe_cluster(self, name: str) -> EngineCluster:
        self._region_env()
        try:
            described = _call("describe_cluster", self._lib().describe_cluster, cluster_name=name, region=self._region)
        except _NotFound:
            return EngineCluster(name=name, status="NOT_FOUND")
        status = str(described.get("clusterStatus"))
        reason = None
        if status in {"CREATE_FAILED", "DELETE_FAILED", "UPDATE_FAILED"}:
            failures = described.get("failures") or []
            reason = "; ".join(f"{f.get('failureCode')}: {f.get('failureReason')}" for f in failures) or (
                f"CloudFormation stack {described.get('cloudFormationStackStatus')}"
            )
        head = described.get("headNode") or {}
        return EngineCluster(
            name=name,
            status=status,
            fleet_status=described.get("computeFleetStatus"),
            head_node_instance_id=head.get("instanceId"),
            reason=reason,
        )

    def list_clusters(self) -> list[EngineCluster]:
        self._region_env()
        found: list[EngineCluster] = []
        token = None
        while True:
            page = _call("list_clusters", self._lib().list_clusters, region=self._region, next_token=token)
            found += [
                EngineCluster(name=c["clusterName"], status=str(c.get("clusterStatus")))
                for c in page.get("clusters", [])
            ]
            token = page.get("nextToken")
            if not token:
                return found

    def stop_compute_fleet(self, name: str) -> EngineCluster:
        """Teardown's first step. A cluster that never completed (or is being deleted) has no
        fleet to stop, and ParallelCluster refuses the call: the delete that follows removes
        everything, so that is not a failure."""
        described = self.describe_cluster(name)
        if described.status not in FLEET_STATES:
            return described
        try:
            _call(
                "update_compute_fleet",
                self._lib().update_compute_fleet,
                cluster_name=name,
                status="STOP_REQUESTED",
                region=self._region,
            )
        except _NotFound:
            return EngineCluster(name=name, status="NOT_FOUND")
        return self.describe_cluster(name)

    def stop_head_node(self, name: str) -> EngineCluster:
        """ParallelCluster has no call for it: the head node is an EC2 instance it tagged."""
        heads = [
            i["instanceId"] for i in self._instances(name, "HeadNode") if i.get("state") not in {"stopped", "stopping"}
        ]
        if heads:
            self.ec2.stop_instances(InstanceIds=heads)
        return self.describe_cluster(name)

    def start_head_node(self, name: str) -> EngineCluster:
        heads = [i["instanceId"] for i in self._instances(name, "HeadNode") if i.get("state") == "stopped"]
        if heads:
            self.ec2.start_instances(InstanceIds=heads)
        return self.describe_cluster(name)

    def delete_cluster(self, name: str) -> EngineCluster:
        self._region_env()
        with suppress(_NotFound):  # gone already: the sweep below still runs
            _call("delete_cluster", self._lib().delete_cluster, cluster_name=name, region=self._region)
        described = self.describe_cluster(name)
        if described.status == "NOT_FOUND":
            self._remove_leftovers(name)
            return described
        return (
            EngineCluster(name=name, status="DELETE_IN_PROGRESS")
            if described.status.startswith("CREATE")
            else described
        )

    # helpers ------------------------------------------------------------------------
    def _instances(self, name: str, node_type: str) -> list[dict[str, Any]]:
        self._region_env()
        found: list[dict[str, Any]] = []
        token = None
        while True:
            try:
                page = _call(
                    "describe_cluster_instances",
                    self._lib().describe_cluster_instances,
                    cluster_name=name,
                    region=self._region,
                    node_type=node_type,
                    next_token=token,
                )
            except _NotFound:
                return found
            found += page.get("instances", [])
            token = page.get("nextToken")
            if not token:
                return found

    def _remove_leftovers(self, name: str) -> None:
        """The stack is gone; nothing tagged with its name may keep billing."""
        with suppress(_NotFound):  # force=True: ParallelCluster terminates them without a stack
            _call(
                "delete_cluster_instances",
                self._lib().delete_cluster_instances,
                cluster_name=name,
                region=self._region,
                force=True,
            )
        tagged = [{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
        left = [
            i["InstanceId"]
            for page in self.ec2.get_paginator("describe_instances").paginate(
                Filters=tagged + [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
            )
            for r in page["Reservations"]
            for i in r["Instances"]
        ]
        if left:
            self.ec2.terminate_instances(InstanceIds=left)
        for page in self.ec2.get_paginator("describe_volumes").paginate(
            Filters=tagged + [{"Name": "status", "Values": ["available"]}]
        ):
            for volume in page["Volumes"]:
                self.ec2.delete_volume(VolumeId=volume["VolumeId"])
