"""The stack cache: installing lsst_distrib takes about ten minutes per cluster, so every
installed tag stays on one EFS file system per account and region that outlives clusters
(adapters/efs_cache.py). A cluster mounts it at /lsst-cache; its install finds the tag
there and skips (a hit), or installs it there once for every later cluster (a miss).

Retention: a tag nobody used for `stack_cache_retention_days` is removed by the next install
on any cluster (on the head node, which is where the files are); a cache that no cluster
used for as long is deleted by the reconciler. Its cost (EFS standard, by what is stored) is
shown with the owners' costs (GET /costs), with the minutes the hits saved.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lsstctl.domain.models import Cluster, from_iso, iso
from lsstctl.domain.models import ClusterState as S
from lsstctl.domain.pcluster_config import STACK_CACHE_MOUNT
from lsstctl.domain.pricing import HOURS_PER_MONTH
from lsstctl.services.deps import Deps

GIB = 2**30
# Rubin's documented figure for a binary install, used until this account measured one.
DOCUMENTED_INSTALL_MINUTES = 10.0


def ensure_for_launch(deps: Deps) -> str | None:
    """The cache's file system id for a cluster being launched (created on first use), or
    None when the deployment runs without a cache."""
    if not deps.settings.stack_cache:
        return None
    return str(deps.stack_cache.ensure(deps.settings.cluster_subnet_id).file_system_id)


def stack_root(deps: Deps, cluster: Cluster, shared: str) -> str:
    """Where the cluster's stacks live, as its head node sees them: the cache when it has
    one, else its own shared storage (`shared`)."""
    if cluster.stack_cache_id:
        return deps.settings.stack_cache_root or STACK_CACHE_MOUNT
    return shared


def record_install(deps: Deps, cluster: Cluster, *, skipped: bool, seconds: float) -> None:
    if cluster.stack_cache_id:
        deps.store.record_stack_cache_use(
            cluster.spec.stack_tag,
            file_system_id=cluster.stack_cache_id,
            at=iso(deps.clock()),
            install_seconds=None if skipped else seconds,
        )


def report(deps: Deps) -> dict[str, Any]:
    """What the cache holds, what it costs, and the install minutes it saved."""
    volume = deps.stack_cache.find() if deps.stack_cache is not None else None
    tags = deps.store.list_stack_cache_tags()
    if volume is not None:
        tags = [t for t in tags if t["file_system_id"] == volume.file_system_id]
    measured = [t["install_seconds_total"] / t["installs"] for t in tags if t["installs"]]
    typical_minutes = (sum(measured) / len(measured) / 60) if measured else DOCUMENTED_INSTALL_MINUTES
    saved = sum(
        t["hits"] * ((t["install_seconds_total"] / t["installs"] / 60) if t["installs"] else typical_minutes)
        for t in tags
    )
    size_gib = (volume.size_bytes / GIB) if volume is not None else 0.0
    per_month = size_gib * deps.catalog.efs_gb_month(deps.settings.region)
    return {
        "enabled": deps.settings.stack_cache,
        "file_system_id": volume.file_system_id if volume is not None else None,
        "size_gib": round(size_gib, 3),
        "usd_per_month": round(per_month, 2),
        "usd_per_hour": round(per_month / HOURS_PER_MONTH, 5),
        "retention_days": deps.settings.stack_cache_retention_days,
        "hits": sum(t["hits"] for t in tags),
        "installs": sum(t["installs"] for t in tags),
        "install_minutes_saved": round(saved, 1),
        "tags": sorted(
            (
                {"tag": t["tag"], "installs": t["installs"], "hits": t["hits"], "last_used_at": t["last_used_at"]}
                for t in tags
            ),
            key=lambda t: t["tag"],
        ),
    }


def retire_if_unused(deps: Deps, now: datetime, clusters: list[Cluster]) -> dict[str, Any] | None:
    """Delete the cache when no cluster uses it and none used it within the retention
    period (the reconciler's rule). Returns what was done, or None."""
    volume = deps.stack_cache.find()
    if volume is None:
        return None
    if any(c.stack_cache_id == volume.file_system_id and c.state != S.DELETED for c in clusters):
        return None  # mounted, or about to be
    uses = [
        t["last_used_at"] for t in deps.store.list_stack_cache_tags() if t["file_system_id"] == volume.file_system_id
    ]
    last = max([from_iso(u) for u in uses], default=None) or volume.created_at
    if last is None or now - last < timedelta(days=deps.settings.stack_cache_retention_days):
        return None
    gone = deps.stack_cache.delete(volume.file_system_id)
    if gone:
        deps.store.forget_stack_cache(volume.file_system_id)
    return {"file_system_id": volume.file_system_id, "last_used_at": iso(last), "deleted": gone}
