"""Domain models: what users ask for (specs) and what the control plane records.

Pure pydantic, no AWS imports. Field-level checks here are the ones that belong to our
product (names, budgets, tags); ParallelCluster's own schema and validators judge the
rendered cluster config (see adapters/pcluster_validation.py).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CLUSTER_NAME_RE = r"^[a-z][a-z0-9-]{1,39}$"
USER_NAME_RE = r"^[a-z][a-z0-9-]{1,31}$"
PROJECT_NAME_RE = r"^[a-z][a-z0-9-]{1,39}$"
# Release tags (v30_0_7), weeklies (w_2026_40), dailies (d_2026_11_02) and w_latest.
STACK_TAG_RE = r"^(v\d+_\d+_\d+(_rc\d+)?|w_\d{4}_\d{2}|d_\d{4}_\d{2}_\d{2}|w_latest)$"
INSTANCE_TYPE_RE = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$"


def cluster_id(owner: str, name: str) -> str:
    """A cluster's name in AWS and its key in the records: names are per owner, so two
    owners may both have a cluster `demo`, and AWS sees two names. The owner's digest keeps
    the id injective (an `owner-name` join is not: `a-b`+`c` and `a`+`b-c`) and within
    ParallelCluster's cluster-name rules (a letter first, then letters, digits and
    hyphens; 5 to 60 characters: here 13 to 51). The owner stays readable in the tags."""
    return f"{name}-{hashlib.sha256(owner.encode()).hexdigest()[:10]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def from_iso(text: str) -> datetime:
    """The time `iso` wrote (or any ISO 8601 time with an offset or a Z)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class _Model(BaseModel):
    # Validators are built on a model's first use, not at import: a handler's cold start pays
    # only for the models its path uses.
    model_config = ConfigDict(defer_build=True)


class _Strict(_Model):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)


class QueueSpec(_Strict):
    """A Slurm partition. Name rules and min/max consistency are left to ParallelCluster's
    validators so that users see ParallelCluster's own message."""

    name: str = Field(min_length=1, max_length=64)
    instance_types: list[str] = Field(min_length=1, max_length=5)
    min_nodes: int = Field(0, ge=0, le=1000)
    max_nodes: int = Field(4, ge=1, le=1000)
    capacity_type: Literal["ondemand", "spot"] = "ondemand"

    @field_validator("instance_types")
    @classmethod
    def _instance_type_shape(cls, value: list[str]) -> list[str]:
        for itype in value:
            if not re.match(INSTANCE_TYPE_RE, itype):
                raise ValueError(f"'{itype}' is not an EC2 instance type (e.g. c6i.2xlarge)")
        return value


class SharedStorageSpec(_Strict):
    type: Literal["ebs", "efs", "fsx_lustre"] = "ebs"
    mount_dir: str = Field("/shared", pattern=r"^/[A-Za-z0-9_/-]{1,60}$")
    size_gib: int = Field(100, ge=1, le=65536)

    @model_validator(mode="after")
    def _fsx_capacity(self) -> SharedStorageSpec:
        if self.type == "fsx_lustre" and self.size_gib % 1200:
            raise ValueError("fsx_lustre size_gib must be a multiple of 1200")
        if self.mount_dir.rstrip("/") in {"", "/home", "/opt", "/usr", "/etc", "/var", "/tmp"}:
            raise ValueError(f"mount_dir {self.mount_dir} would hide a system directory")
        return self


class ClusterSpec(_Strict):
    """What a user asks for when launching a cluster: a preset (lsstctl.domain.presets)
    and any top-level fields of its own, or every field itself."""

    preset: str | None = Field(None, description="a named size (GET /presets); the spec's own fields win")
    name: str = Field(pattern=CLUSTER_NAME_RE, description="lowercase, 2-40 chars")
    owner: str | None = Field(None, pattern=USER_NAME_RE, description="defaults to the caller")
    region: str | None = None
    head_node_type: str = Field("t3.medium", pattern=INSTANCE_TYPE_RE)
    os: Literal["alinux2023", "ubuntu2204", "ubuntu2404", "rhel9", "rocky9"] = "alinux2023"
    queues: list[QueueSpec] = Field(min_length=1, max_length=10)
    shared_storage: SharedStorageSpec = SharedStorageSpec()
    stack_tag: str = Field("v30_0_7", description="an EUPS tag of lsst_distrib")
    budget_usd: float = Field(gt=0, le=100_000)
    project: str | None = Field(
        None,
        pattern=PROJECT_NAME_RE,
        description="a project (grant) whose budget this cluster also draws on; the owner must be a member",
    )
    idle_minutes: int = Field(60, ge=5, le=7 * 24 * 60)
    max_lifetime_hours: float = Field(24, gt=0, le=30 * 24)

    @field_validator("stack_tag")
    @classmethod
    def _stack_tag_form(cls, value: str) -> str:
        if not re.match(STACK_TAG_RE, value):
            raise ValueError(
                f"'{value}' is not an lsst_distrib tag: use a release (v30_0_7, v29_1_0_rc1), a weekly "
                "(w_2026_47), a daily (d_2026_11_02) or w_latest"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _preset_under_own_fields(cls, data: Any) -> Any:
        from lsstctl.domain.presets import PRESETS

        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in PRESETS:
            return {**PRESETS[data["preset"]].spec_fields(), **data}
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        from lsstctl.domain.presets import preset

        if value is not None:
            preset(value)  # a ValueError naming the presets there are
        return value


class ClusterChange(_Strict):
    """PATCH /clusters/{name}: what may change while a cluster lives (every field optional,
    at least one; the same bounds as at launch)."""

    budget_usd: float | None = Field(None, gt=0, le=100_000)
    max_lifetime_hours: float | None = Field(None, gt=0, le=30 * 24)
    idle_minutes: int | None = Field(None, ge=5, le=7 * 24 * 60)
    # Per queue: the most nodes it may reach from now on, up to its max_nodes at launch (its
    # ParallelCluster MaxCount); applied on the head node by the scale governor.
    max_nodes: dict[str, int] | None = None

    @field_validator("max_nodes")
    @classmethod
    def _node_counts(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for queue, count in (value or {}).items():
            if not 0 <= count <= 1000:
                raise ValueError(f"max_nodes of {queue} must be between 0 and 1000")
        if value is not None and not value:
            raise ValueError("name at least one queue")
        return value

    @model_validator(mode="after")
    def _something(self) -> ClusterChange:
        if not self.model_fields_set:
            raise ValueError("name at least one of budget_usd, max_lifetime_hours, idle_minutes, max_nodes")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class ClusterState(str, Enum):
    REQUESTED = "requested"
    LAUNCHING = "launching"
    INSTALLING = "installing"
    READY = "ready"
    TEARING_DOWN = "tearing_down"
    DELETED = "deleted"
    FAILED = "failed"


class Transition(_Model):
    state: str
    at: str
    reason: str


class Cluster(_Model):
    """The record of one cluster generation (a name can be reused once deleted).

    `name` is the owner's name for it; `id` (lsstctl.domain.models.cluster_id) is what the
    control plane and AWS call it: the record's key, the ParallelCluster cluster and its
    stack, the idle alarm, the metrics namespace, the workflows' executions."""

    name: str
    owner: str
    id: str = ""
    spec: ClusterSpec
    state: ClusterState = ClusterState.REQUESTED
    generation: int = 1
    created_at: str
    updated_at: str
    history: list[Transition] = []
    launch_execution: str | None = None
    teardown_execution: str | None = None
    # When the claimed teardown execution was started (None: claimed, not started yet).
    teardown_started_at: str | None = None
    teardown_reason: str | None = None
    failure: dict[str, str] | None = None
    head_node_instance_id: str | None = None
    install_command_id: str | None = None
    # The account's stack cache this cluster mounts (an EFS file system id), if any.
    stack_cache_id: str | None = None
    archive_uri: str | None = None
    # How the stack install ended: the log's S3 copy, the command's status, its last lines.
    install_log: dict[str, Any] | None = None
    engine_status: str | None = None
    compute_stopped_at: str | None = None
    # How the last teardown went: reason, outcome, start, end, final spend.
    teardown: dict[str, Any] | None = None
    # The last time the control plane asked Slurm whether the cluster was idle (before an idle
    # teardown, lsstctl.services.idle): at, verdict, jobs, the publisher's state, source.
    idle_check: dict[str, Any] | None = None
    # What PATCH changed while it lived: at, by, and each field's [before, after].
    changes: list[dict[str, Any]] = []
    # The scale governor's node caps (lsstctl.services.governor): caps per queue, whether the
    # head node has applied them (and the caps applied before), its message, when and by whom.
    governor: dict[str, Any] | None = None
    # The graceful end of its jobs at teardown (lsstctl.services.teardown_workflow.end_jobs):
    # at, the jobs held and signalled, the grace given, and whether the head node answered.
    graceful_end: dict[str, Any] | None = None
    # Queues' node limits set by PATCH (max_nodes), below their max_nodes at launch.
    node_limits: dict[str, int] | None = None

    @model_validator(mode="after")
    def _derived_id(self) -> Cluster:
        expected = cluster_id(self.owner, self.name)
        if self.id and self.id != expected:
            raise ValueError(f"cluster id {self.id!r} is not the id of {self.owner}/{self.name}")
        self.id = expected
        return self

    def entered(self, state: ClusterState) -> datetime | None:
        """When this generation first entered `state` (None: never)."""
        times = [t.at for t in self.history if t.state == state.value]
        return from_iso(times[0]) if times else None

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"install_command_id"})


class JobState(str, Enum):
    SUBMITTING = "submitting"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # ran past its walltime
    NODE_FAIL = "node_fail"  # a node it ran on failed (or never booted)
    OUT_OF_MEMORY = "out_of_memory"  # Slurm ended it for using more memory than it asked for

    @property
    def terminal(self) -> bool:
        return self not in {JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING}


class PipetaskSpec(_Strict):
    """`pipetask run` arguments (LSST Science Pipelines, Gen3 middleware). `-j` is the job's
    `cores`."""

    butler: str = Field(min_length=1, max_length=1024, description="-b: Butler repository")
    pipeline: str = Field(min_length=1, max_length=1024, description="-p: pipeline YAML (a path or URI)")
    subset: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="a labelled subset or task of the pipeline (pipeline#subset)",
    )
    inputs: list[str] = Field(min_length=1, max_length=50, description="-i: input collections")
    output: str = Field(min_length=1, max_length=1024, description="-o: output collection")
    data_query: str | None = Field(None, max_length=10_000, description="-d: data query")
    extra_args: list[str] = Field([], max_length=50, description="more `pipetask run` arguments, each one argument")


class BpsSpec(_Strict):
    """A `bps submit` of a pipeline through ctrl_bps_parsl's Slurm site: the submit YAML is
    rendered from these fields; `config` holds any other ctrl_bps settings, passed through."""

    butler: str = Field(min_length=1, max_length=1024, description="butlerConfig: the Butler repository")
    pipeline: str = Field(min_length=1, max_length=1024, description="pipelineYaml")
    subset: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="pipeline#subset")
    inputs: list[str] = Field(min_length=1, max_length=50, description="inCollection")
    output: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="the output collection (bps default: u/<operator>/<payloadName>)",
    )
    data_query: str | None = Field(None, max_length=10_000, description="dataQuery")
    payload_name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="payloadName")
    pilot_nodes: int = Field(1, ge=1, le=1000, description="nodes of each parsl pilot (Slurm) job")
    cores_per_node: int = Field(1, ge=1, le=1024, description="quanta run at once per pilot node")
    pilot_walltime_minutes: int = Field(60, ge=1, le=14 * 24 * 60)
    exclusive_pilots: bool = Field(
        False,
        description="pilots take whole nodes (parsl's default); by default they take "
        "cores_per_node CPUs and share nodes, with the submitting job too",
    )
    config: dict[str, Any] = Field({}, description="other ctrl_bps settings, written into the submit YAML as given")


JOB_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Slurm's --array: indexes and ranges with an optional step, and an optional %limit.
ARRAY_RE = r"^\d{1,6}(-\d{1,6}(:\d{1,6})?)?(,\d{1,6}(-\d{1,6}(:\d{1,6})?)?){0,31}(%\d{1,4})?$"


class JobSpec(_Strict):
    """One job, of one kind: `command` (a shell script of the user's own), `pipetask` (a
    `pipetask run`) or `bps` (a `bps submit`). Resources as Slurm asks for them."""

    name: str = Field("job", pattern=JOB_NAME_RE)
    command: str | None = Field(None, min_length=1, max_length=10_000)
    pipetask: PipetaskSpec | None = None
    bps: BpsSpec | None = None
    queue: str | None = Field(None, description="the partition (a queue of the cluster); default: Slurm's")
    nodes: int = Field(1, ge=1, le=1000)
    tasks: int | None = Field(None, ge=1, le=100_000, description="--ntasks; default: one per node")
    cores: int = Field(1, ge=1, le=1024, description="--cpus-per-task (pipetask: -j)")
    memory_mb: int | None = Field(None, ge=1, le=24 * 1024 * 1024, description="--mem per node; default: Slurm's")
    walltime_minutes: int = Field(60, ge=1, le=14 * 24 * 60)
    array: str | None = Field(None, pattern=ARRAY_RE, description="--array, for command jobs (e.g. 0-9%2)")

    @model_validator(mode="after")
    def _one_kind(self) -> JobSpec:
        given = [k for k in ("command", "pipetask", "bps") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'command', 'pipetask' or 'bps'")
        if self.array is not None and self.command is None:
            raise ValueError("'array' is for command jobs")
        if self.tasks is not None and self.tasks < self.nodes:
            raise ValueError(f"'tasks' ({self.tasks}) must be at least 'nodes' ({self.nodes})")
        return self

    @property
    def ntasks(self) -> int:
        return self.tasks or self.nodes

    @property
    def kind(self) -> str:
        return "command" if self.command is not None else "pipetask" if self.pipetask is not None else "bps"


class Quanta(_Model):
    """A pipeline's quanta, from the middleware's own report (`pipetask report`)."""

    expected: int = 0
    succeeded: int = 0
    failed: int = 0
    blocked: int = 0  # not run: an upstream quantum failed

    @property
    def remaining(self) -> int:
        return max(0, self.expected - self.succeeded - self.failed - self.blocked)


class Job(_Model):
    job_id: str
    cluster: str  # the owner's name for it
    cluster_id: str = ""  # the record's key (see Cluster.id)
    generation: int = 1  # of the cluster: a reused name does not inherit old jobs
    owner: str
    spec: JobSpec
    state: JobState = JobState.SUBMITTING
    slurm_job_id: str | None = None
    exit_code: str | None = None
    reason: str | None = None
    output_dir: str | None = None
    execution: str | None = None
    # From Slurm's record of the job: when it ran, on what (for its cost), and why it waits.
    started_at: str | None = None
    ended_at: str | None = None
    node_count: int | None = None
    cpus: int | None = None
    slurm_nodes: str | None = None
    partition: str | None = None
    quanta: Quanta | None = None
    # Computed when the job is read (not stored): what it cost so far, and its share of the
    # cluster generation's spend (lsstctl.services.jobs.with_costs).
    cost_usd: float | None = None
    spend_share_percent: float | None = None
    created_at: str
    updated_at: str
    history: list[Transition] = []

    @model_validator(mode="after")
    def _derived_cluster_id(self) -> Job:
        self.cluster_id = cluster_id(self.owner, self.cluster)
        return self


class UserSpec(_Strict):
    name: str = Field(pattern=USER_NAME_RE)


class User(_Model):
    name: str
    owner: str
    iam_user_name: str
    iam_user_arn: str
    secret_arn: str
    policy_name: str
    created_at: str


class QuotaSpec(_Strict):
    """An owner's limits, as an admin sets them (a field left out keeps the default)."""

    live_clusters: int | None = Field(None, ge=0, le=1000)
    total_nodes: int | None = Field(None, ge=0, le=100_000)
    total_budget_usd: float | None = Field(None, ge=0, le=10_000_000)
    monthly_budget_usd: float | None = Field(None, ge=0, le=10_000_000)


class ProjectSpec(_Strict):
    """PUT /projects/{name}: a grant's budget, its member owners and its period: each
    calendar month (UTC), or fixed dates [starts, ends) when both are given."""

    members: list[str] = Field(min_length=1, max_length=500)
    budget_usd: float = Field(ge=0, le=10_000_000)
    starts: date | None = None
    ends: date | None = None

    @field_validator("members")
    @classmethod
    def _member_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(USER_NAME_RE, name):
                raise ValueError(f"'{name}' is not an owner name ({USER_NAME_RE})")
        return sorted(set(value))

    @model_validator(mode="after")
    def _period(self) -> ProjectSpec:
        if (self.starts is None) != (self.ends is None):
            raise ValueError("give both starts and ends (fixed dates), or neither (each calendar month)")
        if self.starts is not None and self.ends is not None and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


class Project(_Model):
    name: str
    members: list[str]
    budget_usd: float
    starts: date | None = None
    ends: date | None = None
    set_by: str
    set_at: str


class Quota(_Model):
    owner: str
    live_clusters: int
    total_nodes: int
    total_budget_usd: float
    # The owner's ceiling for a calendar month (UTC): what their clusters spent this month
    # plus what their live clusters may still spend (their budgets). None: the deployment's.
    monthly_budget_usd: float | None = None
    set_by: str | None = None  # None: the deployment's defaults
    set_at: str | None = None
