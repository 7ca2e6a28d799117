"""launch-cluster, cluster queries, and teardown requests (from any trigger)."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lsstctl.domain.lifecycle import ACTIVE, CLAIMABLE_FOR_TEARDOWN
from lsstctl.domain.models import Cluster, ClusterChange, ClusterSpec, ClusterState, Transition, cluster_id, iso
from lsstctl.domain.pcluster_config import render_cluster_config
from lsstctl.domain.policies import HEAD_NODE_METRICS_POLICY
from lsstctl.domain.scripts import OS_DEFAULT_USER
from lsstctl.errors import ConflictError, ControlPlaneError, InvalidTransitionError, NotFoundError, ValidationError
from lsstctl.observability import logger, metrics, request_id
from lsstctl.services import audit, quotas
from lsstctl.services.budget import check_budget_is_enough
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_may_act_for, ensure_visible
from lsstctl.services.ledgers import current

CLUSTER_STATE_CHANGED = "Cluster State Changed"
TEARDOWN_COMPLETED = "Teardown Completed"


def poll_settings(deps: Deps) -> dict[str, int]:
    s = deps.settings
    return {
        "launch_timeout": s.launch_timeout_seconds,
        "install_timeout": s.install_timeout_seconds,
        "archive_timeout": s.archive_timeout_seconds,
        "delete_timeout": s.delete_timeout_seconds,
    }


def archive_prefix(cluster: Cluster) -> str:
    """Where a cluster generation's outputs go in the archive bucket (owners read their own)."""
    return f"{cluster.owner}/{cluster.name}/g{cluster.generation}"


def cluster_config(deps: Deps, cluster: Cluster) -> dict[str, Any]:
    s = deps.settings
    return render_cluster_config(
        cluster.spec,
        owner=cluster.owner,
        subnet_id=s.cluster_subnet_id,
        key_name=s.cluster_key_name,
        archive_bucket=s.archive_bucket,
        archive_prefix=f"{cluster.owner}/{cluster.name}",
        cluster_id=cluster.id,
        stack_cache_file_system_id=cluster.stack_cache_id,
        metrics_policy_arn=s.head_node_metrics_policy_arn
        or f"arn:aws:iam::{s.account_id}:policy/{HEAD_NODE_METRICS_POLICY}",
    )


def node_root(deps: Deps, cluster: Cluster) -> str:
    """Where the head node's filesystem starts ('' on AWS; a directory in the emulator)."""
    return deps.settings.head_node_root.replace("{cluster}", cluster.id).rstrip("/")


def shared_dir(deps: Deps, cluster: Cluster) -> str:
    """The cluster's shared storage as seen by commands on its head node."""
    return f"{node_root(deps, cluster)}{cluster.spec.shared_storage.mount_dir}"


def job_user(deps: Deps, cluster: Cluster) -> str:
    """Who runs the cluster's jobs: the OS's login user (never root), or the deployment's."""
    return deps.settings.job_user or OS_DEFAULT_USER[cluster.spec.os]


def publish_state(deps: Deps, cluster: Cluster, reason: str) -> None:
    deps.events.publish(
        CLUSTER_STATE_CHANGED,
        {
            "cluster": cluster.name,
            "cluster_id": cluster.id,
            "owner": cluster.owner,
            "generation": cluster.generation,
            "state": cluster.state.value,
            "reason": reason,
            "at": cluster.updated_at,
        },
    )


def transition(deps: Deps, cid: str, to: ClusterState, reason: str, **kwargs: Any) -> Cluster:
    """Conditional state write, then its event (re-published when a retried step finds its
    own earlier write: consumers dedupe on cluster id, generation and state)."""
    kwargs.setdefault("allowed_from", frozenset(s for s in ClusterState))
    cluster = deps.store.transition(cid, to=to, reason=reason, **kwargs)
    publish_state(deps, cluster, reason)
    logger.info("cluster transition", extra={"cluster": cid, "state": to.value, "reason": reason})
    return cluster


def launch_cluster(deps: Deps, principal: Principal, spec: ClusterSpec) -> Cluster:
    s = deps.settings
    owner = spec.owner or principal.name
    ensure_may_act_for(principal, owner)
    region = spec.region or s.region
    if region != s.region:
        raise ValidationError(f"this control plane launches clusters in {s.region}, not {region}", field="region")
    spec = spec.model_copy(update={"owner": owner, "region": region})
    now = iso(deps.clock())
    cluster = Cluster(
        name=spec.name,
        owner=owner,
        spec=spec,
        created_at=now,
        updated_at=now,
        history=[Transition(state=ClusterState.REQUESTED.value, at=now, reason=f"requested by {principal.name}")],
    )
    # ParallelCluster's schema and validators judge the config before anything exists,
    # and the budget must at least cover starting and tearing this cluster down.
    deps.validator.validate(cluster.id, cluster_config(deps, cluster))
    capped = check_budget_is_enough(deps, cluster)
    if capped is not None:  # launched capped, and told so (the record and the response say it)
        cluster = cluster.model_copy(update={"governor": capped})
    quotas.check_launch(deps, cluster)
    try:
        cluster = deps.store.create_cluster(cluster, before_reuse=lambda: ensure_name_is_free(deps, cluster))
        created = True
    except ConflictError:
        # A repeated request (a retry without Idempotency-Key) converges on the cluster it
        # created; another of the owner's clusters holding the name is a real conflict.
        existing = deps.store.get_cluster(cluster.id)
        if not (existing.spec == spec and existing.state in ACTIVE):
            raise
        cluster, created = existing, False
    name = f"launch-{cluster.id}-g{cluster.generation}"
    if cluster.launch_execution is None:
        cluster = deps.store.update_cluster(
            cluster.id, {"launch_execution": deps.workflows.execution_arn(s.launch_state_machine_arn, name)}
        )
    if created:
        publish_state(deps, cluster, f"requested by {principal.name}")
    try:
        # Deterministic name: a duplicate request finds the execution that already runs.
        deps.workflows.start(s.launch_state_machine_arn, name, launch_input(deps, cluster))
    except Exception:
        if created:
            withdraw_launch(deps, cluster.id)
        raise
    if created:
        metrics.add_metric(name="ClustersRequested", unit="Count", value=1)
    return cluster


def launch_input(deps: Deps, cluster: Cluster) -> dict[str, Any]:
    return {
        "cluster": cluster.id,
        "generation": cluster.generation,
        "poll": poll_settings(deps),
        "request_id": request_id(),
    }


def ensure_name_is_free(deps: Deps, cluster: Cluster) -> None:
    """A name is launched again only once the engine has nothing left under it: a live
    record maps to at most one cluster, never to the leftovers of an earlier one."""
    if deps.engine.describe_cluster(cluster.id).status != "NOT_FOUND":
        raise ConflictError(
            f"the previous cluster named '{cluster.name}' is still being deleted; try again in a few minutes",
            field="name",
        )


def withdraw_launch(deps: Deps, cid: str) -> None:
    """The launch workflow could not start: nothing billable exists, so the record must not
    claim a launch. Best effort — if AWS fails this too, the client's retry converges on the
    record, and without a retry the reconciler withdraws it."""
    try:
        # One write: either the record is withdrawn, or it stays `requested` and a retry of
        # the request converges on it (never half-way, in a state that refuses the retry).
        transition(
            deps,
            cid,
            ClusterState.DELETED,
            "launch workflow could not start",
            allowed_from=frozenset({ClusterState.REQUESTED}),
        )
    except Exception:
        logger.warning("could not withdraw a launch that did not start; the reconciler will", extra={"cluster": cid})


def get_cluster(deps: Deps, principal: Principal, name: str, owner: str | None = None) -> Cluster:
    """The caller's cluster `name` (an admin names another owner with `owner`). Every route
    that names a cluster comes here: another owner's cluster is missing, never a conflict."""
    owner = owner or principal.name
    ensure_visible(principal, owner, f"cluster '{name}'")
    try:
        return deps.store.get_cluster(cluster_id(owner, name))
    except NotFoundError:
        # The same answer as ensure_visible's: a missing cluster and another owner's look alike.
        raise NotFoundError(
            f"cluster '{name}' not found" + (f" for owner {owner}" if owner != principal.name else "")
        ) from None


def cluster_path(cluster: Cluster, principal: Principal) -> str:
    """Where the caller finds the cluster in the API."""
    path = f"/clusters/{cluster.name}"
    return path if cluster.owner == principal.name else f"{path}?owner={cluster.owner}"


def list_clusters(deps: Deps, principal: Principal) -> list[Cluster]:
    return deps.store.list_clusters(None if principal.is_admin else principal.name)


def teardown_execution_name(cluster: Cluster) -> str:
    attempt = 1 + sum(1 for t in cluster.history if t.state == ClusterState.TEARING_DOWN.value)
    return f"teardown-{cluster.id}-g{cluster.generation}-a{attempt}"


def delete_cluster(deps: Deps, principal: Principal, name: str, owner: str | None = None) -> Cluster:
    """DELETE /clusters/{name}: the user's teardown trigger."""
    return request_teardown(deps, get_cluster(deps, principal, name, owner).id, reason="user")


def change_cluster(
    deps: Deps, principal: Principal, name: str, change: ClusterChange, owner: str | None = None
) -> Cluster:
    """PATCH /clusters/{name}: raise or lower the budget, extend or shorten the lifetime,
    change the idle threshold of a cluster that lives. Checked as a launch is (the budget must
    cover starting and tearing down the cluster, the owner's quota must hold it) and against
    what it has spent; recorded in `changes`; the guard acts on it at its next pass, and the
    idle alarm follows a new threshold now. Repeating a PATCH changes nothing more."""
    cluster = get_cluster(deps, principal, name, owner)
    if cluster.state not in ACTIVE:
        raise InvalidTransitionError(
            f"cluster '{name}' is {cluster.state.value}: only a live cluster can change", field="name"
        )
    requested = change.fields()
    limits = _node_limit_changes(deps, cluster, requested.pop("max_nodes", None))
    wanted = {k: v for k, v in requested.items() if getattr(cluster.spec, k) != v}
    if not wanted and not limits:
        return cluster
    spec = ClusterSpec.model_validate({**cluster.spec.model_dump(mode="json"), **wanted})
    changed = cluster.model_copy(update={"spec": spec})
    if "budget_usd" in wanted:
        ledger = current(deps, cluster.id, cluster.generation) or {}
        spent = float(ledger.get("spend_usd") or 0.0)
        if spec.budget_usd <= spent:
            raise ValidationError(
                f"budget_usd {spec.budget_usd:.2f} is not above what {name} has spent "
                f"(${spent:.2f}); to end it, DELETE it",
                field="budget_usd",
            )
        check_budget_is_enough(deps, changed)
        quotas.check_launch(deps, changed)
    entry = {
        "at": iso(deps.clock()),
        "by": principal.name,
        "fields": {
            **{k: [getattr(cluster.spec, k), v] for k, v in wanted.items()},
            **{f"max_nodes.{q}": [before, after] for q, (before, after) in limits.items()},
        },
    }
    updates: dict[str, Any] = {"spec": spec, "changes": [*cluster.changes, entry]}
    if limits:
        updates["node_limits"] = {**(cluster.node_limits or {}), **{q: after for q, (_, after) in limits.items()}}
    updated = deps.store.update_cluster(
        cluster.id, updates, only_if={"generation": cluster.generation, "state": cluster.state}
    )
    if "idle_minutes" in wanted and updated.state == ClusterState.READY:
        deps.monitor.ensure_idle_alarm(updated.id, spec.idle_minutes)
    deps.events.publish(
        "Cluster Changed",
        {
            "cluster": updated.name,
            "cluster_id": updated.id,
            "owner": updated.owner,
            "generation": updated.generation,
            **entry,
        },
    )
    logger.info("cluster changed", extra={"cluster": updated.id, "fields": entry["fields"]})
    return updated


def _node_limit_changes(deps: Deps, cluster: Cluster, limits: dict[str, int] | None) -> dict[str, tuple[int, int]]:
    """A PATCHed max_nodes, checked: per queue (before, after) for those that change. A queue
    may be lowered, or raised back up to its max_nodes at launch (ParallelCluster created that
    many nodes), never below its static nodes; the scale governor applies it."""
    if not limits:
        return {}
    if not deps.settings.governor:
        raise ValidationError(
            "max_nodes is applied by the scale governor, which is off in this deployment", field="max_nodes"
        )
    queues = {q.name: q for q in cluster.spec.queues}
    changes = {}
    for name, count in sorted(limits.items()):
        queue = queues.get(name)
        if queue is None:
            raise ValidationError(
                f"{cluster.name} has no queue '{name}' (queues: {', '.join(sorted(queues))})", field="max_nodes"
            )
        if not queue.min_nodes <= count <= queue.max_nodes:
            raise ValidationError(
                f"max_nodes of {name} must be between its min_nodes ({queue.min_nodes}) and its "
                f"max_nodes at launch ({queue.max_nodes}), not {count}",
                field="max_nodes",
            )
        before = (cluster.node_limits or {}).get(name, queue.max_nodes)
        if before != count:
            changes[name] = (before, count)
    return changes


def request_teardown(deps: Deps, cid: str, *, reason: str, failure: dict[str, str] | None = None) -> Cluster:
    """Claim the cluster for teardown (exactly once) and start the teardown workflow.

    Every trigger comes here: the user, a failed launch, and later idle, lifetime and budget.
    A repeated request finds the claim and converges on the same execution.
    """
    cluster = deps.store.get_cluster(cid)
    if cluster.state == ClusterState.DELETED:
        return cluster
    sm = deps.settings.teardown_state_machine_arn
    if cluster.state != ClusterState.TEARING_DOWN:
        exec_name = teardown_execution_name(cluster)
        updates: dict[str, Any] = {
            "teardown_execution": deps.workflows.execution_arn(sm, exec_name),
            "teardown_reason": reason,
            "teardown_started_at": None,
        }
        if failure:
            updates["failure"] = failure
        try:
            cluster = transition(
                deps, cid, ClusterState.TEARING_DOWN, reason, allowed_from=CLAIMABLE_FOR_TEARDOWN, updates=updates
            )
            audit.record(deps, f"teardown:{reason}", "started", cluster=cid, owner=cluster.owner)
        except InvalidTransitionError:
            cluster = deps.store.get_cluster(cid)
            if cluster.state != ClusterState.TEARING_DOWN:
                return cluster  # deleted meanwhile
    assert cluster.teardown_execution is not None
    # (Re)start the claimed execution: a no-op if it runs, a recovery if a crash lost it.
    exec_name = cluster.teardown_execution.rsplit(":", 1)[1]
    deps.workflows.start(
        sm,
        exec_name,
        {
            "cluster": cluster.id,
            "generation": cluster.generation,
            "reason": cluster.teardown_reason,
            "poll": poll_settings(deps),
            "request_id": request_id(),
        },
    )
    if cluster.teardown_started_at is None:
        # GET shows that the claimed workflow runs. Should this write fail, the reconciler
        # finds a claim "not started", starts it (a no-op: it runs) and writes it then.
        with suppress(ControlPlaneError, BotoCoreError, ClientError):
            cluster = deps.store.update_cluster(
                cid,
                {"teardown_started_at": iso(deps.clock())},
                only_if={"teardown_execution": cluster.teardown_execution},
            )
    metrics.add_metric(name="TeardownsRequested", unit="Count", value=1)
    return cluster
