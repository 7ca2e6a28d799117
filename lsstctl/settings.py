"""Typed configuration, read from the environment once per container at the edge.

The core never reads os.environ: handlers call `get_settings()` and pass values down.
Every field `x` comes from `LSSTCTL_X` (the region also from AWS_REGION, then
AWS_DEFAULT_REGION) and is validated by pydantic as it is typed here; no other source (no
.env file). A plain pydantic model: pydantic-settings' machinery cost a cold start ~0.1 s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lsstctl.domain.principals import parse_admins

ENV_PREFIX = "LSSTCTL_"
REGION_VARIABLES = ("LSSTCTL_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    region: str = "us-east-1"
    state_table: str = "lsstctl-state"
    idempotency_table: str = "lsstctl-idempotency"
    archive_bucket: str = "lsstctl-archive"
    event_bus: str = "lsstctl-events"
    # The audit trail's CloudWatch Logs group (append-only for every role); empty: none kept.
    audit_log_group: str = ""
    launch_state_machine_arn: str = ""
    teardown_state_machine_arn: str = ""
    job_state_machine_arn: str = ""

    # Where clusters are placed (the deployer's network); users never choose these.
    cluster_subnet_id: str = ""
    cluster_key_name: str = ""

    # `local` materialises clusters inside the emulator; `parallelcluster` creates real ones
    # with AWS ParallelCluster's library (on AWS: the engine Lambda, on ParallelCluster's layer).
    engine: Literal["local", "parallelcluster"] = "local"
    # The engine's own function (on AWS): every other function calls the engine and
    # ParallelCluster's validators through it. Empty: in process.
    engine_function_name: str = ""
    # The job steps' function: where the API cancels jobs and reads their logs (it has no
    # shell on head nodes itself); empty: here (the emulator, the chatops step).
    job_steps_function_name: str = ""
    # Local engine: seconds a new cluster reports CREATE_IN_PROGRESS before CREATE_COMPLETE.
    local_provision_seconds: float = 0
    # Local engine: seconds a deletion takes (DELETE_IN_PROGRESS until then).
    local_delete_seconds: float = 0
    # `full` runs ParallelCluster's validators (dry run); `schema` only its schema (offline).
    config_validation: Literal["full", "schema"] = "full"

    lsst_installer_url: str = "https://ls.st/lsstinstall"
    # The stack cache: installed tags kept on an EFS file system that outlives clusters, so
    # the next cluster with the same tag mounts it and skips the install.
    stack_cache: bool = True
    # A tag nobody used for this long is removed from the cache (by the next install), and a
    # cache no cluster used for this long is deleted (by the reconciler).
    stack_cache_retention_days: int = Field(30, ge=1, le=3650)
    # Where head-node commands see the cache (empty: its mount dir, /lsst-cache). The
    # emulator plays every head node on this machine and keeps the cache in one directory.
    stack_cache_root: str = ""
    # Prefix applied to head-node paths ("{cluster}" is replaced by the cluster name). Empty
    # on AWS; the emulator plays every head node on this machine and keeps each cluster's
    # shared storage under its own directory.
    head_node_root: str = ""

    # The managed policy every head node gets for its queue-depth metric (its own cluster's
    # namespace only); empty: the deployment's default name in LSSTCTL_ACCOUNT_ID.
    head_node_metrics_policy_arn: str = ""
    # The API's execute-api ARN, granted to created users (defaults to any API in the region).
    api_execute_arn: str = ""
    # Who Slurm jobs run as on the head node; empty means the OS's login user (ec2-user...).
    job_user: str = ""
    user_name_prefix: str = "lsst-"
    iam_path: str = "/lsstctl/"
    secret_prefix: str = "lsstctl/users/"

    # The AWS account the control plane serves: callers from any other are refused.
    account_id: str = Field("", pattern=r"^(\d{12})?$")
    # Admins, as full ARNs (comma separated): IAM users, roles (every session), or one
    # session of a role. No bare names and no default (lsstctl.domain.principals).
    admin_principals: str = ""
    # Local mode only: trust the X-Lsst-Principal header as the caller's identity; a bare
    # name stands for a session of this role (the emulator registers it, session names
    # trusted).
    trust_principal_header: bool = False
    local_people_role: str = "lsstctl-local-people"
    # Every owner's quota unless an admin set theirs (PUT /quotas/{owner}): live clusters,
    # their compute nodes at full size, and their budgets, summed.
    quota_live_clusters: int = Field(10, ge=0)
    quota_total_nodes: int = Field(256, ge=0)
    quota_total_budget_usd: float = Field(5000, ge=0)
    quota_monthly_budget_usd: float = Field(5000, ge=0)
    # Mutating API requests (POST, PUT, DELETE) one owner may send per minute; 0: no limit.
    rate_limit_per_minute: int = Field(60, ge=0)
    # How workflows poll what they wait for (seconds): every `poll_seconds` at first, then a
    # quarter of the wait so far, at most `poll_max_seconds` (domain.lifecycle.next_poll_seconds).
    # Tests and the demo compress them.
    poll_seconds: int = Field(15, ge=1)
    poll_max_seconds: int = Field(60, ge=1)
    # A job may run for hours: its polls slow down further (a 2-hour job: 38 polls, not 127).
    job_poll_max_seconds: int = Field(300, ge=1)
    launch_timeout_seconds: int = 3600
    install_timeout_seconds: int = 3 * 3600
    archive_timeout_seconds: int = 3600
    delete_timeout_seconds: int = 3600
    # A job is tracked for its walltime plus this long in the queue, then given up on.
    job_queue_timeout_seconds: int = 7 * 24 * 3600
    # Bounded spend: the guard's schedule, and teardown timing until some are measured.
    guard_interval_seconds: int = 60
    default_stop_compute_seconds: float = 180
    default_teardown_seconds: float = 1200
    # The graceful end: before compute stops, a teardown holds the cluster's pending jobs and
    # signals its running ones (SIGTERM), then waits this long for them to save their work.
    # Every budget reserve includes it (lsstctl.services.budget.teardown_timing).
    teardown_grace_seconds: int = Field(60, ge=0, le=3600)
    # The reconciler (every few minutes): how long a fresh record may lack its execution
    # (the request that wrote it may still be starting it), the slack past a workflow's
    # own deadlines before it counts as stalled, and the backoff between re-driven
    # teardowns of one cluster (doubling from base, up to max).
    reconcile_interval_seconds: int = 300
    reconcile_grace_seconds: int = 600
    # Each of a pass's reads (and its record) is tried this many times, backing off from
    # this many seconds (doubling, jittered): about a minute in all, within the 5-minute tick.
    reconcile_read_attempts: int = Field(6, ge=1, le=20)
    reconcile_read_backoff_seconds: float = Field(1.0, ge=0)
    # A teardown claimed but whose execution never started (its StartExecution failed) is
    # started by the first pass this long after the claim (the request may still be at it).
    reconcile_start_grace_seconds: int = 60
    # The SSM Command document that asks a head node's Slurm whether it is idle (the only
    # command the guard and the idle alarm may run: infra/control-plane.yaml QueueProbeDocument).
    queue_probe_document: str = "lsstctl-queue-probe"
    # The scale governor: as a budget runs down, cap the compute nodes each queue may reach so
    # that the reserve shrinks with it (lsstctl.domain.governor); the SSM Command document that
    # applies a cap on a head node (infra/control-plane.yaml NodeCapDocument). Off: every queue
    # may reach MaxCount until the budget teardown (the bench compares both).
    governor: bool = True
    node_cap_document: str = "lsstctl-node-cap"
    # How long one guard pass (a 60 s Lambda) may spend asking head nodes before it defers the
    # remaining questions to the next pass.
    guard_idle_questions_seconds: float = Field(25, ge=0)
    # A pass over more live clusters than `guard_single_pass_clusters` is shared in shares of
    # `guard_shard_size`: this invocation meters the first share and asks the guard's own
    # function (`guard_function_name`, asynchronously) for each other, so a pass takes about as
    # long at ten thousand clusters as at a thousand. Up to a thousand, one invocation reads
    # every record and ledger in a few pages and lists every node once (seconds on AWS).
    # 200: the most names one EC2 tag filter takes (a share lists only its own nodes).
    # No function name: one invocation meters every cluster (the emulator's default).
    guard_function_name: str = ""
    guard_single_pass_clusters: int = Field(1000, ge=1)
    guard_shard_size: int = Field(200, ge=1, le=200)
    # A workflow step whose AWS call failed transiently is re-run in place this many times
    # (jittered backoff from this many seconds, doubling) before Step Functions' Retry sees it.
    step_attempts: int = Field(3, ge=1, le=10)
    step_backoff_seconds: float = Field(0.5, ge=0)
    stall_slack_seconds: int = 900
    redrive_base_seconds: int = 300
    redrive_max_seconds: int = 6 * 3600
    # SNS topic for owner notifications (spend warnings, teardowns needing attention).
    notifications_topic_arn: str = ""
    # ChatOps: the Secrets Manager secret holding the Slack app's signing secret (empty: the
    # Slack endpoint refuses every request), the state machine that runs commands, and the
    # only URLs the control plane posts to (Slack's own hooks on AWS).
    slack_signing_secret_arn: str = ""
    chatops_state_machine_arn: str = ""
    chat_url_prefix: str = "https://hooks.slack.com/"
    # How long a step waits in-process for a short head-node command (sbatch, scontrol).
    short_command_seconds: float = 20
    # Validators to skip (comma separated, e.g. type:HeadNodeLaunchTemplateValidator).
    suppressed_validators: str = ""

    @field_validator("admin_principals")
    @classmethod
    def _admins_are_arns(cls, value: str) -> str:
        parse_admins(value)  # a bare name or a malformed ARN stops the container with its reason
        return value


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings `environ` (default: this process's environment) gives."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name in Settings.model_fields:
        if f"{ENV_PREFIX}{name.upper()}" in environ:
            values[name] = environ[f"{ENV_PREFIX}{name.upper()}"]
    region = next((environ[v] for v in REGION_VARIABLES if environ.get(v)), None)
    if region:
        values["region"] = region
    return Settings.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return from_environment()
