"""Idle that is really idle. The idle alarm and the guard see the queue depth a head node
publishes every minute; no data counts as idle, because a dead head node publishes nothing.
But a publisher can die while jobs run (cron stopped, a full disk), and a cluster whose jobs
are running must not be torn down as idle. So before an idle teardown the control plane
asks Slurm itself, on the head node, through the one SSM document it may run there
(`lsstctl.domain.scripts.QUEUE_PROBE_SCRIPT`):

- Slurm answers with pending or running jobs: **busy**. No teardown; the probe has put the
  publisher back and run it, so the alarm has data again; the owner is told; the record keeps
  the answer (`idle_check`), and the guard does not ask again for one idle period.
- Slurm answers with no jobs: **idle**. The teardown goes on.
- No answer (SSM refuses the instance, the command fails or does not finish in time): the
  head node or its Slurm is dead — **silent**. The teardown goes on.
- AWS fails the question itself (throttling, 5xx): **unknown**. Nothing is decided; the alarm
  is reset (it fires again while the cluster stays quiet) and the guard asks at its next pass.

The lifetime and the budget end a busy cluster all the same: they never ask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from lsstctl.adapters.aws import classify
from lsstctl.domain.models import Cluster, from_iso, iso
from lsstctl.domain.scripts import QueueProbe, parse_queue_probe
from lsstctl.errors import AwsUnavailableError, TransientError
from lsstctl.observability import logger, metrics
from lsstctl.services import audit
from lsstctl.services.clusters import node_root
from lsstctl.services.deps import Deps
from lsstctl.services.remote import tail, wait_short

Verdict = Literal["busy", "idle", "silent", "unknown"]


@dataclass(frozen=True)
class IdleCheck:
    verdict: Verdict
    jobs: int | None = None
    publisher: str = ""
    detail: str = ""

    @property
    def proceed(self) -> bool:
        """Whether an idle teardown may go on."""
        return self.verdict in ("idle", "silent")


def ask_slurm(deps: Deps, cluster: Cluster) -> IdleCheck:
    """Run the queue probe on the head node and read its answer."""
    instance = cluster.head_node_instance_id
    if not instance:
        return IdleCheck("silent", detail="no head node recorded")
    comment = f"lsstctl: is {cluster.id} idle?"
    try:
        command = deps.runner.run_document(
            instance,
            deps.settings.queue_probe_document,
            {"nodeRoot": node_root(deps, cluster)},
            comment=comment,
            timeout_seconds=60,
        )
        result = wait_short(deps, command, instance, comment=comment)
    except Exception as error:
        mapped = classify(error)
        if isinstance(mapped, AwsUnavailableError):
            return IdleCheck("unknown", detail=str(mapped))
        if isinstance(mapped, TransientError):  # the command did not finish in time
            return IdleCheck("silent", detail=str(mapped))
        if mapped is None:
            raise
        return IdleCheck("silent", detail=f"SSM could not reach the head node: {mapped}")
    probe = parse_queue_probe(result.stdout) if result.status == "Success" else QueueProbe(slurm=False)
    if not probe.slurm:
        return IdleCheck(
            "silent", detail=f"Slurm did not answer ({result.status}): {tail(result.stderr or result.stdout, 200)}"
        )
    if probe.jobs > 0:
        return IdleCheck(
            "busy",
            jobs=probe.jobs,
            publisher=probe.publisher,
            detail=f"Slurm has {probe.jobs} pending or running job(s)",
        )
    return IdleCheck("idle", jobs=0, publisher=probe.publisher, detail="Slurm has no pending or running job")


def confirm_idle(deps: Deps, cluster: Cluster, *, source: Literal["alarm", "guard"]) -> IdleCheck:
    """Ask Slurm before an idle teardown; record the answer; tell the owner when it is busy."""
    check = ask_slurm(deps, cluster)
    record: dict[str, Any] = {"at": iso(deps.clock()), **asdict(check), "source": source}
    logger.info("idle check", extra={"cluster": cluster.id, **record})
    metrics.add_metric(name=f"IdleCheck{check.verdict.capitalize()}", unit="Count", value=1)
    if check.verdict == "unknown":
        return check  # nothing learned: nothing written
    deps.store.update_cluster(cluster.id, {"idle_check": record})
    if check.verdict == "busy":
        audit.record(
            deps,
            f"idle_check:{source}",
            "busy: kept",
            cluster=cluster.id,
            owner=cluster.owner,
            jobs=check.jobs,
            publisher=check.publisher,
        )
        repaired = {
            "restored": "its queue-depth publisher was restarted",
            "running": "its queue-depth publisher is running again",
            "failing": "its queue-depth publisher fails: look at the head node",
            "missing": "its queue-depth publisher is missing: look at the head node",
        }.get(check.publisher, "")
        deps.notifier.notify(
            cluster.owner,
            f"{cluster.name}: idle alarm overruled, Slurm has {check.jobs} job(s)",
            {
                "cluster": cluster.name,
                "cluster_id": cluster.id,
                "action": "none",
                "jobs": check.jobs,
                "publisher": check.publisher,
                "note": f"No queue-depth data, yet Slurm has work; {repaired}.",
            },
        )
    return check


def recently_busy(cluster: Cluster, now: datetime) -> bool:
    """Slurm said busy less than one idle period ago: the guard does not ask again yet."""
    check = cluster.idle_check or {}
    if check.get("verdict") != "busy" or not check.get("at"):
        return False
    at = from_iso(str(check["at"]))
    return now - at < timedelta(minutes=cluster.spec.idle_minutes)
