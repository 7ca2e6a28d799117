"""Spend: metering every cluster from what actually runs, the ledger, and the guard that
keeps spend under each cluster's budget (and ends clusters past their lifetime or idle)."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from lsstctl.domain.cost import (
    Resource,
    SpendReport,
    TeardownTiming,
    ledger_changed,
    measure,
    must_stop_for_budget,
    resource_from,
    thresholds_crossed,
    with_sample,
)
from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.domain.models import Cluster, from_iso, iso
from lsstctl.domain.models import ClusterState as S
from lsstctl.domain.pricing import SpotBook, gb_month_to_hourly, spot_hourly
from lsstctl.errors import TransientError
from lsstctl.observability import logger, metrics
from lsstctl.ports import QueueDepth
from lsstctl.services import jobs, stack_cache
from lsstctl.services.budget import potential_compute_hourly, teardown_timing
from lsstctl.services.clusters import get_cluster, request_teardown
from lsstctl.services.deps import Deps
from lsstctl.services.governor import apply_caps, needs_applying, queues_of, running_by_queue, steer
from lsstctl.services.identity import Principal
from lsstctl.services.idle import confirm_idle, recently_busy
from lsstctl.services.ledgers import current, current_all, pass_stamp

SPEND_WARNING = "Spend Warning"


def _instance_hourly(
    deps: Deps, region: str, o: Any, spot: SpotBook, before: dict[str, Any] | None
) -> tuple[float, str]:
    """One price per node, the same in every ledger and in the final record: on-demand, or
    for a spot node its zone's spot price (bounded: `spot_hourly`); when EC2 has no plausible
    price for it now, the price it has been charged so far, else on-demand."""
    on_demand = deps.catalog.instance_hourly(region, o.type)
    if not o.spot:
        return on_demand, "on-demand"
    hourly = spot_hourly(spot, o.type, o.zone, on_demand)
    if hourly is not None:
        return hourly, "spot"
    if before is not None and before.get("pricing") == "spot":
        return float(before["hourly_usd"]), "spot"
    return on_demand, "on-demand"


def _priced_ec2(
    deps: Deps, region: str, observed: list[Any], spot: SpotBook, previous: dict[str, Any] | None = None
) -> list[Resource]:
    before = {r["id"]: r for r in (previous or {}).get("breakdown", [])}
    resources = []
    for o in observed:
        if o.kind == "instance":
            hourly, pricing = _instance_hourly(deps, region, o, spot, before.get(o.id))
        else:
            hourly, pricing = gb_month_to_hourly(deps.catalog.ebs_gb_month(region, o.type), o.size_gib or 0), "gb-month"
        resources.append(
            Resource(
                id=o.id,
                kind=o.kind,
                role=o.role,
                type=o.type,
                hourly_usd=hourly,
                started_at=o.started_at,
                ended_at=o.ended_at,
                size_gib=o.size_gib,
                pricing=pricing,
            )
        )
    return resources


def spot_book(deps: Deps, observed: list[Any]) -> SpotBook:
    """The spot prices the observed spot nodes need (one call, none without spot nodes)."""
    return deps.spot_prices(sorted({o.type for o in observed if o.kind == "instance" and o.spot}))


def _priced(
    deps: Deps, cluster: Cluster, observed: list[Any], spot: SpotBook, previous: dict[str, Any]
) -> list[Resource]:
    region = cluster.spec.region or deps.settings.region
    resources = _priced_ec2(deps, region, observed, spot, previous)
    storage = cluster.spec.shared_storage
    if storage.type in {"efs", "fsx_lustre"}:
        # File systems are not EC2 resources: priced from the spec, from launch to deletion.
        started = cluster.entered(S.LAUNCHING)
        if started is not None:
            price = deps.catalog.shared_storage_gb_month(region, storage.type)
            resources.append(
                Resource(
                    id=f"{storage.type}:{cluster.name}",
                    kind="filesystem",
                    role="storage",
                    type=storage.type,
                    hourly_usd=gb_month_to_hourly(price, storage.size_gib),
                    started_at=started,
                    ended_at=cluster.entered(S.DELETED),
                    size_gib=storage.size_gib,
                    pricing="gb-month",
                )
            )
    return resources


def _with_gone(previous: dict[str, Any], seen: dict[str, Resource], now: datetime) -> list[Resource]:
    for data in previous.get("breakdown", []):
        if data["id"] not in seen:
            gone = resource_from(data)
            seen[gone.id] = gone if gone.ended_at else replace(gone, ended_at=now)
    return list(seen.values())


def meter_unexplained(
    deps: Deps, name: str, observed: list[Any], now: datetime, spot: SpotBook | None = None
) -> SpendReport:
    """Resources under a name no live record holds still bill: they are measured into that
    name's last generation's ledger (or, with no record at all, an `orphan` ledger of
    generation 0) until the reconciler has removed them."""
    record = deps.store.find_cluster(name)
    if record is not None:
        return meter(deps, record, observed, now, spot)
    owner = next((o.owner for o in observed if o.owner), None) or "unknown"
    previous = deps.store.get_ledger(name, 0) or {}
    priced = {r.id: r for r in _priced_ec2(deps, deps.settings.region, observed, spot or {}, previous)}
    report = measure(_with_gone(previous, priced, now), now, potential_compute_usd_per_hour=0.0)
    ledger = {
        **report.to_dict(),
        "cluster": name,
        "cluster_id": name,
        "owner": owner,
        "generation": 0,
        "state": "orphan",
    }
    deps.store.put_ledger(name, 0, owner, ledger)
    return report


def meter(
    deps: Deps,
    cluster: Cluster,
    observed: list[Any],
    now: datetime,
    spot: SpotBook | None = None,
    previous: dict[str, Any] | None = None,
) -> SpendReport:
    """Measure one cluster and keep its ledger. Resources seen before but gone now (a
    deleted volume, an instance EC2 no longer lists) keep their cost; one that vanished
    without a recorded end is charged until now, never less than it may have cost.
    `previous`: its last ledger, when the caller read it already ({} for none)."""
    return _metered(deps, cluster, observed, now, spot, previous)[0]


def _metered(
    deps: Deps,
    cluster: Cluster,
    observed: list[Any],
    now: datetime,
    spot: SpotBook | None,
    previous: dict[str, Any] | None,
    depth: QueueDepth | None = None,
    rewrite: bool = False,
) -> tuple[SpendReport, dict[str, Any]]:
    """The measurement and the ledger kept. A live cluster's ledger is written only when it
    changed (`ledger_changed`), or `rewrite` (it is not on the billing index yet): readers
    carry an unchanged one forward to the guard's last pass (`ledgers.current`). Any other's
    (being torn down, deleted) is written each time.
    `depth`: this pass's queue-depth answer for it (kept as `idle_not_before`)."""
    if previous is None:
        previous = deps.store.get_ledger(cluster.id, cluster.generation) or {}
    not_before = idle_not_before(cluster, previous, depth)
    seen = {r.id: r for r in _priced(deps, cluster, observed, spot or {}, previous)}
    report = measure(_with_gone(previous, seen, now), now, potential_compute_usd_per_hour=0.0)
    # What it can reach before the next tick: its queues' node caps, or what bills if more.
    potential = potential_compute_hourly(deps, cluster, running_by_queue(report, queues_of(observed)))
    report = replace(report, max_burn_usd_per_hour=report.base_burn_usd_per_hour + potential)
    ledger = {
        **report.to_dict(cluster.spec.budget_usd),
        "cluster": cluster.name,
        "cluster_id": cluster.id,
        "owner": cluster.owner,
        "project": cluster.spec.project,
        "generation": cluster.generation,
        "state": cluster.state.value,
        # The spend thresholds its owner has been warned of (`warn`).
        "warned": previous.get("warned", []),
        # The series GET .../cost/history answers (and `lsstctl cost NAME --plot` draws).
        "history": with_sample(previous.get("history"), now, report.spend_usd, report.burn_usd_per_hour),
    }
    if not_before is not None:
        ledger["idle_not_before"] = iso(not_before)  # the idle question waits until then
    if cluster.state not in ACTIVE or rewrite or ledger_changed(previous, ledger):
        deps.store.put_ledger(cluster.id, cluster.generation, cluster.owner, ledger)
    return report, ledger


def idle_window(
    cluster: Cluster, now: datetime, not_before: datetime | None = None
) -> tuple[datetime, datetime] | None:
    """The window whose queue depth decides whether the cluster is idle; None when the
    question does not arise (not ready, ready for less than its idle period, Slurm said busy
    less than an idle period ago, or a job was seen in the queue less than an idle period ago:
    `not_before`, see `idle_not_before`)."""
    ready = cluster.entered(S.READY)
    window = timedelta(minutes=cluster.spec.idle_minutes)
    if cluster.state != S.READY or ready is None or now - ready < window or recently_busy(cluster, now):
        return None
    if not_before is not None and now < not_before:
        return None
    return now - window, now


def idle_not_before(cluster: Cluster, previous: dict[str, Any] | None, depth: QueueDepth | None) -> datetime | None:
    """Until when the cluster cannot be idle: a minute with a job in its queue stays inside
    every idle window that ends less than an idle period after it. So one answer with a job
    spares the guard's question (GetMetricData, billed per metric asked) until then: a busy
    cluster is asked about once an idle period, not every minute. `depth`: this pass's answer
    (None: not asked; the ledger's `idle_not_before` then holds)."""
    if depth is None:
        kept = (previous or {}).get("idle_not_before")
        return from_iso(kept) if kept else None
    if depth.busy_at is None:
        return None
    return depth.busy_at + timedelta(minutes=cluster.spec.idle_minutes)


def _idle(
    deps: Deps,
    cluster: Cluster,
    now: datetime,
    depths: dict[str, QueueDepth] | None = None,
    not_before: datetime | None = None,
) -> bool:
    """The guard's double-check of the idle alarm: no job in the idle window, or no data.
    `depths`: the pass's batched answers (else asked for this cluster alone); `not_before`:
    its `idle_not_before`."""
    window = idle_window(cluster, now, not_before)
    if window is None:
        return False
    if depths is not None and cluster.id in depths:
        peak = depths[cluster.id].peak
    else:
        peak = deps.monitor.max_queue_depth(cluster.id, *window)
    return peak is None or peak <= 0


def decide(
    deps: Deps,
    cluster: Cluster,
    report: SpendReport,
    now: datetime,
    timing: TeardownTiming,
    depths: dict[str, QueueDepth] | None = None,
    not_before: datetime | None = None,
) -> str | None:
    created = from_iso(cluster.created_at)
    if now >= created + timedelta(hours=cluster.spec.max_lifetime_hours):
        return "lifetime"
    if must_stop_for_budget(
        report, cluster.spec.budget_usd, guard_interval_seconds=deps.settings.guard_interval_seconds, timing=timing
    ):
        return "budget"
    if _idle(deps, cluster, now, depths, not_before):
        return "idle"
    return None


def warn(deps: Deps, cluster: Cluster, report: SpendReport, ledger: dict[str, Any] | None = None) -> list[int]:
    """Tell the owner of each spend threshold newly crossed, once. `ledger`: the one just
    kept, which then records the thresholds reached (so later passes ask nothing)."""
    already = set((ledger or {}).get("warned", []))
    reached = thresholds_crossed(report.spend_usd, cluster.spec.budget_usd, already)
    crossed = []
    for threshold in reached:
        if deps.store.claim_warning(cluster.id, cluster.generation, threshold):
            detail = {
                "cluster": cluster.name,
                "cluster_id": cluster.id,
                "owner": cluster.owner,
                "generation": cluster.generation,
                "threshold_percent": threshold,
                "spend_usd": round(report.spend_usd, 4),
                "budget_usd": cluster.spec.budget_usd,
                "burn_usd_per_hour": round(report.burn_usd_per_hour, 4),
            }
            deps.notifier.notify(cluster.owner, f"{cluster.name}: {threshold}% of its budget spent", detail)
            deps.events.publish(SPEND_WARNING, detail)
            crossed.append(threshold)
    if ledger is not None and reached:
        ledger["warned"] = sorted(already | set(reached))
        deps.store.put_ledger(cluster.id, cluster.generation, cluster.owner, ledger)
    return crossed


def guard_tick(deps: Deps, shard: dict[str, Any] | None = None) -> dict[str, Any]:
    """One pass over every cluster that may bill: meter it, then end it if its budget,
    lifetime or idleness says so, else cap the nodes its remaining budget can carry.

    Reads are by the page, not by the cluster: up to `guard_single_pass_clusters`, the records
    and live ledgers in one paged read of the billing index (1 MB a page), the EC2 listings
    (1000 instances, 500 volumes to a page) and the queue depths 500 to a call (GetMetricData);
    a ledger is written only when it changed. A cluster being torn down is read on its own,
    strongly consistent (the teardown's last measurement may write its ledger meanwhile), and
    so is every cluster when a batched read fails: one failure never costs the pass its clusters.

    Over `guard_single_pass_clusters` clusters, the pass is shared (`shard`: one share, as
    sent): this invocation reads the live ids (the index's keys), meters the first share of
    `guard_shard_size` and sends each other one to the guard's own function, all measured as of
    the same instant; a share reads its records and ledgers 100 to a call (BatchGetItem) and
    lists only its clusters' nodes. A share that cannot be sent is metered here. The tagged
    resources of no live record are metered where every node is listed: here when the pass is
    not shared, else by the reconciler (every five minutes, as it removes them). Each
    invocation's duration is in its summary (`pass_seconds`; Lambda's Duration metric, which
    alarms near the function's limit: GuardPassSlowAlarm); one longer than the guard's interval
    is logged as an error and counted (GuardPassOverran)."""
    began = time.monotonic()
    if shard is not None:
        now = from_iso(shard["at"])
        if "clusters" not in shard:  # a share only an earlier version sent ("unexplained"): the reconciler's now
            return _timed(deps, {"at": now.isoformat(), "shard": "none", "clusters": 0}, began)
        ids = list(shard["clusters"])
        timing = TeardownTiming(**shard["timing"]) if shard.get("timing") else None
        observed = deps.inventory.observe(now, clusters=ids)
        summary = _meter_clusters(deps, _records(deps, ids), observed, now, timing)
        summary["shard"] = f"{shard['index']}/{shard['of']}"
        return _timed(deps, summary, began)
    now = deps.clock()
    stamp = pass_stamp(now)
    if (whole := _single_pass(deps, now, began)) is not None:
        return whole
    ids = deps.store.list_billing_cluster_ids()
    size = deps.settings.guard_shard_size
    shares = [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]
    mine, sent = list(shares[0]), 0
    timing = teardown_timing(deps) if len(shares) > 1 else None  # read once, sent with each share
    known = asdict(timing) if timing else None
    for index, share in enumerate(shares[1:], start=1):
        sharing = {"at": stamp, "index": index, "of": len(shares), "clusters": share, "timing": known}
        if _dispatched(deps, sharing):
            sent += 1
        else:
            mine += share
    # A shared pass lists only its own nodes: the resources of no live record are then left to
    # the reconciler, which lists every node on its own beat (services.reconciler). Here only
    # when no share could be sent, or more than one tag filter takes (every node listed anyway).
    everything_here = sent == 0 or len(mine) > size
    observed = deps.inventory.observe(now) if everything_here else deps.inventory.observe(now, clusters=mine)
    summary = _meter_clusters(deps, _records(deps, mine), observed, now, timing)
    summary["clusters_live"] = len(ids)
    summary["shares_sent"] = sent
    if everything_here:
        _meter_unexplained(deps, set(ids), observed, now, summary)
    # Every live cluster measured as of `now` (shares sent are at it within seconds):
    # unchanged ledgers hold until then. With none, nothing to say (an idle plane writes nothing).
    if ids:
        deps.store.record_guard_pass(stamp)
    return _timed(deps, summary, began)


def _single_pass(deps: Deps, now: datetime, began: float) -> dict[str, Any] | None:
    """The pass in this one invocation, when it is no bigger than `guard_single_pass_clusters`
    (or there is no function to share it with): every record and live ledger in one paged
    read, every node listed once. None when the pass is to be shared, or the paged read
    failed (the shared path then reads as it does, by id)."""
    most = deps.settings.guard_single_pass_clusters if deps.guard_shards is not None else None
    try:
        found = deps.store.billing_clusters_and_ledgers(most)
    except Exception:
        logger.warning("the paged read of records and ledgers failed; read by id", exc_info=True)
        return None
    if found is None:
        return None
    clusters, ledgers = found
    # Those being torn down again, strongly consistent (a teardown writes them meanwhile).
    leaving = [c.id for c in clusters if c.state not in ACTIVE]
    if leaving:
        fresh = {c.id: c for c in _records(deps, leaving)}  # those now deleted left out
        clusters = [c if c.state in ACTIVE else fresh[c.id] for c in clusters if c.state in ACTIVE or c.id in fresh]
    observed = deps.inventory.observe(now)
    summary = _meter_clusters(deps, clusters, observed, now, None, ledgers)
    summary["clusters_live"] = len(clusters)
    summary["shares_sent"] = 0
    _meter_unexplained(deps, {c.id for c in clusters}, observed, now, summary)
    _unlist_stale_ledgers(deps, clusters, ledgers)
    if clusters:
        deps.store.record_guard_pass(pass_stamp(now))
    return _timed(deps, summary, began)


def _unlist_stale_ledgers(deps: Deps, clusters: list[Cluster], ledgers: dict[tuple[str, int], dict[str, Any]]) -> None:
    """A ledger left on the billing index by a generation no longer live (its teardown never
    wrote it again) is taken off, so the index holds what bills and no more."""
    live = {(c.id, c.generation) for c in clusters}
    for cluster_id, generation in sorted(set(ledgers) - live):
        if any(c.id == cluster_id and c.generation < generation for c in clusters):
            continue  # a newer ledger than the record read: the index's lag, not a stale one
        try:
            deps.store.unlist_ledger(cluster_id, generation)
        except Exception:
            logger.warning("a stale ledger stays on the billing index", extra={"cluster": cluster_id}, exc_info=True)


def _meter_unexplained(
    deps: Deps, live: set[str], observed: dict[str, list[Any]], now: datetime, summary: dict[str, Any]
) -> None:
    """Meter the tagged resources of no live record (`meter_unexplained`)."""
    for name, items in sorted(observed.items()):
        if name in live or not any(o.exists for o in items):
            continue
        try:
            report = meter_unexplained(deps, name, items, now, spot_book(deps, items))
            summary.setdefault("unexplained", {})[name] = round(report.burn_usd_per_hour, 6)
        except Exception:
            logger.exception("guard failed on unexplained resources", extra={"cluster": name})
            summary.setdefault("errors", []).append(name)


def _records(deps: Deps, ids: list[str]) -> list[Cluster]:
    """The records of `ids` not yet deleted: 100 to a call, or each on its own when the batch
    fails (one failure never costs the pass its clusters)."""
    if not ids:
        return []
    try:
        return deps.store.get_billing_clusters(ids)
    except Exception:
        logger.warning("batched record read failed; each record is read on its own", exc_info=True)
    found = (deps.store.find_cluster(i) for i in ids)
    return [c for c in found if c is not None and c.state != S.DELETED]


def _dispatched(deps: Deps, share: dict[str, Any]) -> bool:
    if deps.guard_shards is None:
        return False
    try:
        deps.guard_shards.dispatch(share)
        return True
    except Exception:
        logger.warning("a share of the pass could not be sent; metered here", exc_info=True)
        return False


def _timed(deps: Deps, summary: dict[str, Any], began: float) -> dict[str, Any]:
    seconds = time.monotonic() - began
    summary["pass_seconds"] = round(seconds, 3)  # Lambda's own Duration metric has it too (not billed)
    if seconds > deps.settings.guard_interval_seconds:
        summary["overran"] = True
        logger.error(
            "the guard's pass overran its interval",
            extra={"seconds": round(seconds, 1), "interval_seconds": deps.settings.guard_interval_seconds},
        )
        metrics.add_metric(name="GuardPassOverran", unit="Count", value=1)
    return summary


def _meter_clusters(
    deps: Deps,
    clusters: list[Cluster],
    observed: dict[str, list[Any]],
    now: datetime,
    timing: TeardownTiming | None = None,
    known: dict[tuple[str, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Meter and decide for each of `clusters` (its nodes in `observed`), as of `now`.
    `timing`: the teardown timing the pass read (else read here); `known`: the live ledgers
    read with the records (else read here)."""
    spot = spot_book(deps, [o for c in clusters for o in observed.get(c.id, [])])
    timing = timing or teardown_timing(deps)
    steady = [c for c in clusters if c.state in ACTIVE]
    ledgers, depths, unindexed = _batched_reads(deps, steady, now, known)
    summary: dict[str, Any] = {"at": now.isoformat(), "clusters": len(clusters), "teardowns": {}, "warnings": {}}
    started = time.monotonic()
    for cluster in clusters:
        try:
            previous = None  # read on its own (a teardown may be writing it; or the batch failed)
            if ledgers is not None and cluster.state in ACTIVE:
                previous = ledgers.get((cluster.id, cluster.generation), {})
            depth = depths.get(cluster.id) if depths is not None else None
            rewrite = (cluster.id, cluster.generation) in unindexed
            report, ledger = _metered(deps, cluster, observed.get(cluster.id, []), now, spot, previous, depth, rewrite)
            if cluster.state not in ACTIVE:
                continue
            if crossed := warn(deps, cluster, report, ledger):
                summary["warnings"][cluster.id] = crossed
            not_before = from_iso(ledger["idle_not_before"]) if "idle_not_before" in ledger else None
            reason = decide(deps, cluster, report, now, timing, depths, not_before)
            # A hung head node makes a question (is it idle? apply these caps) last up to
            # `short_command_seconds`: past the pass's allowance, the rest wait for the next pass.
            may_ask = time.monotonic() - started < deps.settings.guard_idle_questions_seconds
            if reason is None and deps.settings.governor and cluster.state == S.READY:
                reason = _govern(deps, cluster, report, observed.get(cluster.id, []), timing, may_ask, summary)
            if reason == "idle":
                # No queue-depth data counts as idle; Slurm itself says whether it is.
                proceed, verdict = False, "deferred"
                if may_ask:
                    check = confirm_idle(deps, cluster, source="guard")
                    proceed, verdict = check.proceed, check.verdict
                if not proceed:
                    summary.setdefault("not_idle", {})[cluster.id] = verdict
                    reason = None
            if reason:
                request_teardown(deps, cluster.id, reason=reason)
                summary["teardowns"][cluster.id] = reason
                metrics.add_metric(name=f"GuardTeardown{reason.capitalize()}", unit="Count", value=1)
        except Exception:  # one broken cluster must not stop the guard for the others
            logger.exception("guard failed on a cluster", extra={"cluster": cluster.id})
            summary.setdefault("errors", []).append(cluster.id)
    return summary


def _batched_reads(
    deps: Deps,
    steady: list[Cluster],
    now: datetime,
    known: dict[tuple[str, int], dict[str, Any]] | None = None,
) -> tuple[dict[tuple[str, int], dict[str, Any]] | None, dict[str, QueueDepth] | None, set[tuple[str, int]]]:
    """The pass's ledgers and queue depths in few calls; None for either whose batched read
    failed (each cluster's is then read on its own). Queue depths only of the clusters whose
    ledger does not say they were busy less than an idle period ago (`idle_not_before`).
    `known`: the ledgers read with the records; those not among them (a new cluster's, or one
    kept before ledgers were on the billing index) are read by key, and returned as the third
    item, to be written back whether or not they changed (so that they are on it)."""
    ledgers: dict[tuple[str, int], dict[str, Any]] | None = {}
    depths: dict[str, QueueDepth] | None = {}
    keys = [(c.id, c.generation) for c in steady]
    unindexed: set[tuple[str, int]] = set()
    try:
        if known is not None:
            ledgers = {k: known[k] for k in keys if k in known}
            if missing := [k for k in keys if k not in known]:
                fetched = deps.store.get_ledgers(missing)
                ledgers.update(fetched)
                unindexed = set(fetched)
        elif steady:
            ledgers = deps.store.get_ledgers(keys)
    except Exception:
        logger.warning("batched ledger read failed; each cluster's is read on its own", exc_info=True)
        ledgers = None
    try:
        windows = {}
        for c in steady:
            kept = idle_not_before(c, ledgers.get((c.id, c.generation)), None) if ledgers is not None else None
            if (window := idle_window(c, now, kept)) is not None:
                windows[c.id] = window
        if windows:
            depths = deps.monitor.queue_depths(windows)
    except Exception:
        logger.warning("batched queue-depth read failed; each cluster's is read on its own", exc_info=True)
        depths = None
    return ledgers, depths, unindexed


def _govern(
    deps: Deps,
    cluster: Cluster,
    report: SpendReport,
    observed: list[Any],
    timing: TeardownTiming,
    may_ask: bool,
    summary: dict[str, Any],
) -> str | None:
    """Cap the fleet the budget left can carry (lsstctl.services.governor); "budget" when it
    cannot carry a single compute node, so no job can progress."""
    governance = steer(deps, cluster, report, running_by_queue(report, queues_of(observed)), timing)
    if governance.stalled:
        return "budget"
    if needs_applying(cluster, governance):
        if not may_ask:
            summary.setdefault("caps_deferred", []).append(cluster.id)
            return None
        try:
            apply_caps(deps, cluster, governance, by="guard", report=report)
            summary.setdefault("caps", {})[cluster.id] = governance.caps
        except TransientError as error:  # AWS or the head node: the reserve keeps the larger caps
            logger.warning("node caps not applied", extra={"cluster": cluster.id, "error": str(error)})
            summary.setdefault("caps_deferred", []).append(cluster.id)
    return None


def final_spend(deps: Deps, cluster: Cluster) -> SpendReport:
    """Measure once more when teardown ends, so the record holds the final spend."""
    now = deps.clock()
    observed = deps.inventory.observe(now).get(cluster.id, [])
    # Priced as the guard prices them (spot nodes at their zone's spot price), so the record
    # and the ledger charge the same node-seconds the same.
    return meter(deps, cluster, observed, now, spot_book(deps, observed))


# queries -------------------------------------------------------------------------------
def cluster_cost(deps: Deps, principal: Principal, name: str, owner: str | None = None) -> dict[str, Any]:
    cluster = get_cluster(deps, principal, name, owner)
    ledger = current(deps, cluster.id, cluster.generation)
    if ledger is None:
        return {
            "cluster": name,
            "cluster_id": cluster.id,
            "owner": cluster.owner,
            "generation": cluster.generation,
            "measured_at": None,
            "spend_usd": 0.0,
            "budget_usd": cluster.spec.budget_usd,
            "breakdown": [],
        }
    # What its jobs used of the spend, and what was idle (head node, storage, unused nodes).
    _priced, split = jobs.with_costs(deps, cluster, jobs.generation_jobs(deps, cluster))
    # GET .../cost/history has the series; the thresholds warned of are the guard's bookkeeping.
    measured = {k: v for k, v in ledger.items() if k not in ("history", "warned", "idle_not_before")}
    return {**measured, "jobs_usd": split["jobs_usd"], "idle_usd": split["idle_usd"]}


def cost_history(deps: Deps, principal: Principal, name: str, owner: str | None = None) -> dict[str, Any]:
    """The guard's measurements of the cluster's current generation, oldest first: spend so far
    and burn rate at each, against its budget (points thin out as it ages: `step_seconds`)."""
    cluster = get_cluster(deps, principal, name, owner)
    ledger = current(deps, cluster.id, cluster.generation) or {}
    history = (
        with_sample(
            ledger["history"], from_iso(ledger["measured_at"]), ledger["spend_usd"], ledger["burn_usd_per_hour"]
        )
        if ledger.get("history")
        else {}
    )
    return {
        "cluster": cluster.name,
        "cluster_id": cluster.id,
        "owner": cluster.owner,
        "generation": cluster.generation,
        "state": cluster.state.value,
        "budget_usd": cluster.spec.budget_usd,
        "step_seconds": history.get("step_seconds"),
        "points": [
            {"at": at, "spend_usd": spend, "burn_usd_per_hour": burn} for at, spend, burn in history.get("points", [])
        ],
    }


COST_SUMMARY = (
    "measured_at",
    "spend_usd",
    "burn_usd_per_hour",
    "budget_usd",
    "budget_used_percent",
    "projected_budget_at",
)


def cluster_view(deps: Deps, principal: Principal, name: str, owner: str | None = None) -> dict[str, Any]:
    """The cluster record with its spend so far (as of the guard's last measurement)."""
    cluster = get_cluster(deps, principal, name, owner)
    ledger = current(deps, cluster.id, cluster.generation) or {}
    summary: dict[str, Any] = {key: ledger.get(key) for key in COST_SUMMARY}
    summary["budget_usd"] = cluster.spec.budget_usd
    summary["spend_usd"] = float(summary["spend_usd"] or 0.0)
    view = {**cluster.public(), "cost": summary}
    if cluster.governor:
        # "capped at 3 of 15 nodes by the budget", and the runway at the last measured burn.
        burn = ledger.get("burn_usd_per_hour") or 0.0
        left = max(0.0, cluster.spec.budget_usd - summary["spend_usd"])
        view["governor"] = {
            **cluster.governor,
            "budget_left_usd": round(left, 4),
            "runway_hours": round(left / burn, 2) if burn > 0 else None,
        }
    return view


CLUSTER_COST_ROW = (
    "cluster",
    "owner",
    "generation",
    "state",
    "spend_usd",
    "burn_usd_per_hour",
    "budget_usd",
    "budget_used_percent",
    "measured_at",
)


def costs_by_owner(deps: Deps, principal: Principal) -> dict[str, Any]:
    totals: dict[str, dict[str, Any]] = {}
    rows = []
    for ledger in current_all(deps, None if principal.is_admin else principal.name):
        rows.append({key: ledger.get(key) for key in CLUSTER_COST_ROW})
        entry = totals.setdefault(
            ledger["owner"], {"owner": ledger["owner"], "spend_usd": 0.0, "burn_usd_per_hour": 0.0, "clusters": 0}
        )
        entry["spend_usd"] += ledger["spend_usd"]
        entry["burn_usd_per_hour"] += ledger["burn_usd_per_hour"]
        entry["clusters"] += 1
    owners = sorted(totals.values(), key=lambda e: e["owner"])
    for entry in owners:
        entry["spend_usd"] = round(entry["spend_usd"], 4)
        entry["burn_usd_per_hour"] = round(entry["burn_usd_per_hour"], 4)
    return {
        # Every cluster generation the guard measured (the caller's; an admin's: everyone's).
        "clusters": sorted(rows, key=lambda r: (r["owner"], r["cluster"] or "", r["generation"] or 0)),
        "owners": owners,
        "total_spend_usd": round(sum(e["spend_usd"] for e in owners), 4),
        # Shared by every owner's clusters, so not in any owner's spend: shown to everyone.
        "stack_cache": stack_cache.report(deps),
    }


def list_presets(deps: Deps, principal: Principal) -> dict[str, Any]:
    """The named sizes with their hourly price at rest and at full size, in this region."""
    from lsstctl.domain.presets import describe_presets

    region = deps.settings.region
    return {"region": region, "prices_as_of": deps.catalog.as_of, "presets": describe_presets(deps.catalog, region)}
