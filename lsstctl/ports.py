"""Ports: the narrow interfaces the services need from the outside world.

Adapters in lsstctl/adapters implement them with boto3 (and pcluster); tests may use
the same adapters on moto, so fakes are rarely needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from lsstctl.domain.models import Cluster, ClusterState, Job, JobState, Quota, User
from lsstctl.domain.principals import Registration


class StateStore(Protocol):
    """Clusters and their jobs are keyed by the cluster's id (Cluster.id: owner and name)."""

    def create_cluster(self, cluster: Cluster, before_reuse: Callable[[], None] | None = None) -> Cluster: ...
    def get_cluster(self, cluster_id: str) -> Cluster: ...
    def list_clusters(self, owner: str | None) -> list[Cluster]: ...
    def transition(
        self,
        cluster_id: str,
        *,
        to: ClusterState,
        reason: str,
        allowed_from: frozenset[ClusterState],
        updates: dict[str, Any] | None = None,
        or_if: dict[str, Any] | None = None,
        only_if: dict[str, Any] | None = None,
    ) -> Cluster: ...
    def update_cluster(self, cluster_id: str, updates: dict[str, Any], only_if: dict[str, Any] | None = None) -> Cluster: ...
    def list_billing_clusters(self) -> list[Cluster]: ...
    def find_cluster(self, cluster_id: str) -> Cluster | None: ...
    def record_reconciliation(self, at: str, findings: list[dict[str, Any]]) -> None: ...
    def put_job(self, job: Job) -> Job: ...
    def get_job(self, cluster_id: str, job_id: str) -> Job: ...
    def list_jobs(self, cluster_id: str) -> list[Job]: ...
    def update_job(self, cluster_id: str, job_id: str, *, state: JobState, reason: str, updates: dict[str, Any] | None = None) -> Job: ...
    def put_user(self, user: User) -> User: ...
    def get_user(self, name: str) -> User | None: ...
    def list_users(self, owner: str | None) -> list[User]: ...
    def get_registration(self, key: str) -> Registration | None: ...
    def put_registration(self, registration: Registration) -> None: ...
    def list_registrations(self) -> list[Registration]: ...
    def delete_registration(self, key: str) -> None: ...
    def get_quota(self, owner: str) -> Quota | None: ...
    def put_quota(self, quota: Quota) -> None: ...
    def count_request(self, owner: str, window: str, limit: int, expires_at: int) -> bool: ...
    def record_stack_cache_use(self, tag: str, *, file_system_id: str, at: str, install_seconds: float | None) -> None: ...
    def list_stack_cache_tags(self) -> list[dict[str, Any]]: ...
    def forget_stack_cache(self, file_system_id: str) -> None: ...


@dataclass(frozen=True)
class EngineCluster:
    """What an engine reports about a cluster (ParallelCluster's describe_cluster, reduced)."""

    name: str
    status: str  # ParallelCluster clusterStatus, or "NOT_FOUND"
    fleet_status: str | None = None
    head_node_instance_id: str | None = None
    reason: str | None = None


class ClusterEngine(Protocol):
    """Creates and deletes clusters, by the cluster's id (its name in AWS). Calls converge:
    repeating one is harmless.
    `delete_cluster` removes everything the engine tagged with the name (instances and
    volumes left behind included)."""

    def list_clusters(self) -> list[EngineCluster]:
        """Every cluster the engine has in the account, whatever the records say."""
        ...

    def create_cluster(self, name: str, config: dict[str, Any]) -> EngineCluster: ...
    def describe_cluster(self, name: str) -> EngineCluster: ...
    def stop_compute_fleet(self, name: str) -> EngineCluster: ...
    def stop_head_node(self, name: str) -> EngineCluster:
        """Stop (not terminate) the head node: its volumes and the data on them stay."""
        ...

    def start_head_node(self, name: str) -> EngineCluster:
        """Start a stopped head node again (a retried teardown must reach its data)."""
        ...
    def delete_cluster(self, name: str) -> EngineCluster: ...


class StackCacheStorage(Protocol):
    """The account's storage for installed stacks, outliving clusters (adapters/efs_cache.py)."""

    def find(self) -> Any:
        """The cache (file_system_id, size_bytes, created_at), or None."""
        ...

    def ensure(self, subnet_id: str) -> Any:
        """The cache, created on first use and reachable from `subnet_id`."""
        ...

    def delete(self, file_system_id: str) -> bool:
        """Remove it; True once it is gone (False: call again later)."""
        ...


class ConfigValidator(Protocol):
    def validate(self, name: str, config: dict[str, Any]) -> list[str]:
        """Raise ClusterConfigError with ParallelCluster's messages; return warnings."""
        ...


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    status: str  # Pending | InProgress | Success | Failed | TimedOut | Cancelled ...
    exit_code: int | None
    stdout: str
    stderr: str

    @property
    def done(self) -> bool:
        return self.status not in {"Pending", "InProgress", "Delayed", "Cancelling"}


class RemoteRunner(Protocol):
    """Runs shell on a head node (SSM Run Command)."""

    def send(self, instance_id: str, script: str, *, comment: str, timeout_seconds: int = 3600) -> str: ...
    def run_document(self, instance_id: str, document: str, parameters: dict[str, str], *, comment: str,
                     timeout_seconds: int = 120) -> str: ...
    def result(self, command_id: str, instance_id: str) -> CommandResult: ...


class IdentityProvisioner(Protocol):
    def ensure_user(
        self, *, name: str, owner: str, policy_name: str, policy: dict[str, Any], secret_name: str, tags: dict[str, str]
    ) -> tuple[str, str]:
        """Create or converge the IAM user, policy and stored key; return (user_arn, secret_arn)."""
        ...

    def list_managed_users(self) -> list[str]: ...
    def owner_of(self, name: str, owner_tag: str) -> str | None: ...
    def existing(self, name: str, secret_name: str) -> tuple[str, str] | None: ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ExecutionStatus:
    status: str  # RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    started_at: Any  # datetime
    stopped_at: Any = None


class WorkflowStarter(Protocol):
    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        """Start an execution with a deterministic name; an existing one is returned as is."""
        ...

    def execution_arn(self, state_machine_arn: str, name: str) -> str:
        """The ARN an execution of that name has (or will have)."""
        ...

    def describe(self, execution_arn: str) -> ExecutionStatus | None:
        """How the execution stands; None if it was never started."""
        ...

    def stop(self, execution_arn: str, cause: str) -> None: ...
