"""Steps of the launch workflow (statemachines/launch.asl.json). Each is safe to retry."""

from __future__ import annotations

from typing import Any

from lsstctl.domain.models import Cluster
from lsstctl.domain.models import ClusterState as S
from lsstctl.domain.scripts import INSTALL_SKIPPED, render_install_script, render_publisher_install
from lsstctl.errors import ConflictError, InstallFailedError, LaunchFailedError
from lsstctl.observability import metrics
from lsstctl.services import stack_cache
from lsstctl.services.clusters import (
    archive_prefix,
    cluster_config,
    job_user,
    node_root,
    request_teardown,
    shared_dir,
    transition,
)
from lsstctl.services.deps import Deps
from lsstctl.services.governor import apply_caps, caps_of
from lsstctl.services.remote import FAILED_STATUSES, check_deadline, converging, deadline_after, error_message, tail

INSTALL_LOG_TAIL_LINES = 20


def install_log_uri(deps: Deps, cluster: Cluster) -> str:
    """The install log's copy in the archive bucket (the head node may write its cluster's prefix)."""
    return f"s3://{deps.settings.archive_bucket}/{archive_prefix(cluster)}/install/{cluster.spec.stack_tag}.log"


def tail_lines(text: str, lines: int = INSTALL_LOG_TAIL_LINES) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][-lines:]


def load(deps: Deps, cid: str, generation: int) -> Cluster:
    """The cluster this execution is about (by id); a stale execution must not touch a newer one."""
    cluster = deps.store.get_cluster(cid)
    if cluster.generation != generation:
        raise ConflictError(f"execution is for generation {generation} of '{cid}', record is {cluster.generation}")
    return cluster


def start_launch(deps: Deps, cid: str, generation: int, poll: dict[str, Any]) -> dict[str, Any]:
    cluster = load(deps, cid, generation)
    cluster = transition(deps, cid, S.LAUNCHING, "creating cluster", allowed_from=frozenset({S.REQUESTED}), or_if={})
    if cluster.stack_cache_id is None:
        cache = stack_cache.ensure_for_launch(deps)
        if cache is not None:
            cluster = deps.store.update_cluster(cid, {"stack_cache_id": cache})
    engine = deps.engine.create_cluster(cid, cluster_config(deps, cluster))
    deps.store.update_cluster(cid, {"engine_status": engine.status})
    return {"status": engine.status, "ready": False, "deadline": deadline_after(deps, poll["launch_timeout"])}


def poll_launch(deps: Deps, cid: str, generation: int, deadline: str) -> dict[str, Any]:
    load(deps, cid, generation)
    engine = converging(deps, lambda: deps.engine.describe_cluster(cid))
    if engine.status == "CREATE_COMPLETE" and engine.head_node_instance_id:
        deps.store.update_cluster(
            cid, {"engine_status": engine.status, "head_node_instance_id": engine.head_node_instance_id}
        )
        return {"status": engine.status, "ready": True, "deadline": deadline}
    if engine.status in {"CREATE_FAILED", "NOT_FOUND"} or engine.status.startswith("DELETE"):
        raise LaunchFailedError(f"cluster creation ended in {engine.status}: {engine.reason or 'no reason given'}")
    check_deadline(deps, deadline, "cluster creation")
    return {"status": engine.status, "ready": False, "deadline": deadline}


def start_install(deps: Deps, cid: str, generation: int, poll: dict[str, Any]) -> dict[str, Any]:
    cluster = load(deps, cid, generation)
    tag = cluster.spec.stack_tag
    cluster = transition(
        deps, cid, S.INSTALLING, f"installing lsst_distrib {tag}", allowed_from=frozenset({S.LAUNCHING}), or_if={}
    )
    command_id = cluster.install_command_id
    if command_id is None:  # a retried step reuses the command it already sent
        script = render_publisher_install(
            cluster=cid, region=cluster.spec.region or deps.settings.region, node_root=node_root(deps, cluster)
        ) + render_install_script(
            shared_dir=stack_cache.stack_root(deps, cluster, shared_dir(deps, cluster)),
            tag=tag,
            installer_url=deps.settings.lsst_installer_url,
            log_uri=install_log_uri(deps, cluster),
            timeout_seconds=poll["install_timeout"],
            retention_days=deps.settings.stack_cache_retention_days,
            demo_in=shared_dir(deps, cluster),
            run_as=job_user(deps, cluster),
        )
        assert cluster.head_node_instance_id, "launch completed without a head node"
        command_id = deps.runner.send(
            cluster.head_node_instance_id,
            script,
            comment=f"install lsst_distrib {tag}",
            timeout_seconds=poll["install_timeout"],
        )
        deps.store.update_cluster(cid, {"install_command_id": command_id})
    return {"command_id": command_id, "done": False, "deadline": deadline_after(deps, poll["install_timeout"])}


def poll_install(deps: Deps, cid: str, generation: int, command_id: str, deadline: str) -> dict[str, Any]:
    cluster = load(deps, cid, generation)
    assert cluster.head_node_instance_id
    result = deps.runner.result(command_id, cluster.head_node_instance_id)
    if result.done:
        # What the owner sees of the install (GET /clusters/{name}): where the whole log is,
        # its last lines, and whether the stack cache already had the tag.
        skipped = result.status == "Success" and INSTALL_SKIPPED in result.stdout
        started = cluster.entered(S.INSTALLING)
        seconds = (deps.clock() - started).total_seconds() if started else 0.0
        deps.store.update_cluster(
            cid,
            {
                "install_log": {
                    "uri": install_log_uri(deps, cluster),
                    "status": result.status,
                    "cached": skipped,
                    "seconds": round(seconds, 1),
                    "tail": tail_lines(result.stdout + ("\n" + result.stderr if result.stderr else "")),
                }
            },
        )
    if result.status == "Success":
        if cluster.install_log is None:  # first time this execution saw it done: count it once
            stack_cache.record_install(deps, cluster, skipped=skipped, seconds=seconds)
        return {"command_id": command_id, "done": True, "deadline": deadline}
    if result.status in FAILED_STATUSES:
        raise InstallFailedError(
            f"stack install {result.status} (exit {result.exit_code}): {tail(result.stderr or result.stdout)}"
        )
    check_deadline(deps, deadline, "stack install")
    return {"command_id": command_id, "done": False, "deadline": deadline}


def mark_ready(deps: Deps, cid: str, generation: int) -> dict[str, Any]:
    cluster = load(deps, cid, generation)
    if deps.settings.governor and cluster.governor and not cluster.governor.get("applied"):
        # Launched capped: the head node applies the caps before any job can start a node.
        apply_caps(deps, cluster, caps_of(deps, cluster), by="launch", notify=False)
    # Idle detection starts now: installing is not idleness.
    deps.monitor.ensure_idle_alarm(cid, cluster.spec.idle_minutes)
    cluster = transition(deps, cid, S.READY, "stack installed", allowed_from=frozenset({S.INSTALLING}), or_if={})
    metrics.add_metric(name="ClustersReady", unit="Count", value=1)
    return {"state": cluster.state.value}


def launch_failed(deps: Deps, cid: str, generation: int, error: dict[str, Any] | None) -> dict[str, Any]:
    """Every failure on the launch path ends in teardown, so nothing billable is left."""
    load(deps, cid, generation)
    code, message = error_message(error)
    metrics.add_metric(name="LaunchFailures", unit="Count", value=1)
    cluster = request_teardown(deps, cid, reason="launch_failed", failure={"code": code, "message": message})
    return {"state": cluster.state.value, "teardown_execution": cluster.teardown_execution}
