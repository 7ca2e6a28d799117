"""The reconciler: what AWS really has, compared with what the records say, every few
minutes (EventBridge schedule), converging the two so that nothing bills unwatched.

The control plane records an intent before it creates anything billable: a cluster record
moves to `launching` (with its generation) before the engine creates a resource, and every
execution's deterministic name is stored before it starts. So a pass reads AWS first and
the records second: anything AWS shows was created after a record that explains it, and a
resource no live record explains is an orphan.

Each pass:
- starts a claimed teardown whose request could not start its workflow (a minute after the
  claim), re-drives one whose execution ended, vanished or stalled (and a `failed` one, with
  backoff), until nothing of the cluster bills;
- moves a launch that stalled (its execution ended without an outcome, or ran past its
  deadlines) to teardown, resumes one that was only interrupted (the emulator restarting),
  and withdraws a request whose workflow never started;
- tears down what the engine or EC2 still has under a name no live record holds (its cost
  so far measured into a ledger each pass until it is gone), and deletes idle alarms of
  clusters that are not running;
- recreates a missing idle alarm, adopts an IAM user created for a request that failed
  afterwards, and settles jobs whose workflow never started or was interrupted;
- deletes the stack cache when no cluster used it for its retention period.
Every action is logged, published (`Reconciler Action`) and recorded with the pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from lsstctl.adapters.aws import classify, retrying
from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.domain.models import Cluster, JobState, from_iso, iso
from lsstctl.domain.models import ClusterState as S
from lsstctl.domain.pcluster_config import OWNER_TAG
from lsstctl.errors import ConflictError, InvalidTransitionError, TransientError
from lsstctl.observability import logger, metrics
from lsstctl.services import audit, stack_cache
from lsstctl.services import clusters as cluster_service
from lsstctl.services.deps import Deps

T = TypeVar("T")
RECONCILER_ACTION = "Reconciler Action"
LAUNCHING = frozenset({S.REQUESTED, S.LAUNCHING, S.INSTALLING})


def _when(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return from_iso(value)


class Pass:
    """One reconciliation: the findings it makes, each with the action taken."""

    def __init__(self, deps: Deps):
        self.deps = deps
        self.now = deps.clock()
        self.findings: list[dict[str, Any]] = []
        s = deps.settings
        self.grace = timedelta(seconds=s.reconcile_grace_seconds)
        self.launch_deadline = timedelta(
            seconds=s.launch_timeout_seconds + s.install_timeout_seconds + s.stall_slack_seconds
        )
        self.teardown_deadline = timedelta(
            seconds=s.archive_timeout_seconds + s.delete_timeout_seconds + s.stall_slack_seconds
        )
        self.unread: list[str] = []
        self.unaudited = 0  # findings the audit trail could not take (each logged in full)
        # Reads and the pass's record: retried with backoff inside the pass's time budget.
        self.attempts = s.reconcile_read_attempts
        self.backoff = s.reconcile_read_backoff_seconds

    def found(self, kind: str, name: str, action: str, **detail: Any) -> None:
        finding = {"kind": kind, "cluster": name, "action": action, **detail}
        self.findings.append(finding)
        logger.warning("reconciler", extra=finding)
        metrics.add_metric(name=f"Reconciler{kind.title().replace('_', '')}", unit="Count", value=1)
        if not audit.record(self.deps, f"reconciler:{action}", kind, cluster=name, **detail):
            self.unaudited += 1
        try:
            self.deps.events.publish(RECONCILER_ACTION, {**finding, "at": iso(self.now)})
        except Exception:  # the record of the pass still has it
            logger.warning("could not publish a reconciler action", extra=finding)

    def read(self, what: str, call: Callable[[], T]) -> T | None:
        """A read the pass needs, retried with backoff (transient failures); None if AWS
        kept failing: the pass goes on without it and records that it could not read it."""
        try:
            return retrying(call, attempts=self.attempts, base_seconds=self.backoff, sleep=self.deps.sleep)
        except Exception as error:
            self.unread.append(what)
            self.failed_item("read", what, error)
            return None

    @contextmanager
    def item(self, kind: str, name: str) -> Iterator[None]:
        """One item of the pass: its failure is logged, counted and recorded, never the
        end of the pass (the next pass tries it again)."""
        try:
            yield
        except Exception as error:
            self.failed_item(kind, name, error)

    def failed_item(self, kind: str, name: str, error: BaseException) -> None:
        mapped = classify(error)
        code = mapped.code if mapped is not None else type(error).__name__
        logger.warning(
            "reconciler could not handle an item",
            extra={"item": kind, "cluster": name, "error": code},
            exc_info=mapped is None or not isinstance(mapped, TransientError),
        )
        metrics.add_metric(name="ReconcilerItemsFailed", unit="Count", value=1)
        self.findings.append({"kind": "error", "cluster": name, "action": "none", "item": kind, "error": code})

    def fresh(self, cluster: Cluster) -> bool:
        """Changed so recently that the request that changed it may still be at work."""
        return self.now - (_when(cluster.updated_at) or self.now) < self.grace

    # records ---------------------------------------------------------------------------
    def teardown(self, cluster: Cluster) -> None:
        execution = self.deps.workflows.describe(cluster.teardown_execution) if cluster.teardown_execution else None
        if execution is None and cluster.teardown_started_at is None:
            # Claimed, but its request could not start the workflow (AWS failing): start the
            # claimed execution now, once the request can no longer be at it.
            waited = self.now - (_when(cluster.updated_at) or self.now)
            if waited < timedelta(seconds=self.deps.settings.reconcile_start_grace_seconds):
                return
            record = cluster_service.request_teardown(
                self.deps, cluster.id, reason=cluster.teardown_reason or "reconciler"
            )
            self.found(
                "teardown_started",
                cluster.id,
                "started the claimed teardown its request could not start",
                execution=record.teardown_execution,
            )
            return
        if execution is not None and execution.status == "RUNNING":
            if self.now - execution.started_at <= self.teardown_deadline:
                return
            assert cluster.teardown_execution is not None  # it was described
            self.deps.workflows.stop(cluster.teardown_execution, "stalled: the reconciler re-drives this teardown")
        elif execution is None and self.fresh(cluster):
            return
        status = execution.status if execution else "never started"
        self.redrive(cluster, f"teardown execution {status.lower()}")

    def redrive(self, cluster: Cluster, why: str) -> None:
        """Claim a new teardown attempt (only if nobody else did meanwhile) and start it."""
        deps = self.deps
        try:
            cluster_service.transition(
                deps,
                cluster.id,
                S.FAILED,
                f"reconciler: {why}",
                allowed_from=frozenset({S.TEARING_DOWN}),
                only_if={"teardown_execution": cluster.teardown_execution, "generation": cluster.generation},
                updates={"failure": {"code": "TeardownStalled", "message": why}},
            )
        except InvalidTransitionError:
            return  # someone else moved it: their execution owns it now
        record = cluster_service.request_teardown(deps, cluster.id, reason=cluster.teardown_reason or "reconciler")
        self.found("teardown_redriven", cluster.id, "restarted teardown", why=why, execution=record.teardown_execution)

    def failed(self, cluster: Cluster, present: bool) -> None:
        """A teardown that stopped: retried with backoff while anything may still bill."""
        attempts = sum(1 for t in cluster.history if t.state == S.TEARING_DOWN.value)
        s = self.deps.settings
        wait = min(s.redrive_base_seconds * 2 ** max(attempts - 1, 0), s.redrive_max_seconds)
        if self.now - (_when(cluster.updated_at) or self.now) < timedelta(seconds=wait):
            return
        record = cluster_service.request_teardown(self.deps, cluster.id, reason=cluster.teardown_reason or "reconciler")
        self.found(
            "failed_teardown_retried",
            cluster.id,
            "restarted teardown",
            attempt=attempts + 1,
            still_billing=present,
            execution=record.teardown_execution,
        )

    def launch(self, cluster: Cluster) -> None:
        deps = self.deps
        execution = deps.workflows.describe(cluster.launch_execution) if cluster.launch_execution else None
        started = _when(cluster.created_at) or self.now
        if execution is not None and execution.status == "RUNNING":
            if self.now - execution.started_at <= self.launch_deadline:
                return
            assert cluster.launch_execution is not None  # it was described
            deps.workflows.stop(cluster.launch_execution, "stalled: the reconciler tears this cluster down")
            self.to_teardown(cluster, "launch ran past its deadlines")
            return
        if execution is None:
            if self.fresh(cluster):
                return
            if cluster.state == S.REQUESTED:
                cluster_service.withdraw_launch(deps, cluster.id)
                self.found("launch_never_started", cluster.id, "withdrew the request (nothing was created)")
            else:
                self.to_teardown(cluster, "launch execution missing")
            return
        if execution.status == "ABORTED" and self.now - started <= self.launch_deadline:
            self.resume_launch(cluster)
            return
        self.to_teardown(cluster, f"launch execution {execution.status.lower()} before the cluster was ready")

    def resume_launch(self, cluster: Cluster) -> None:
        """An interrupted launch (its steps all converge): a new execution carries it on."""
        deps = self.deps
        sm = deps.settings.launch_state_machine_arn
        attempt = 1 + sum(1 for t in cluster.history if t.reason.startswith("reconciler: resumed"))
        name = f"launch-{cluster.id}-g{cluster.generation}-r{attempt}"
        try:
            deps.store.update_cluster(
                cluster.id,
                {"launch_execution": deps.workflows.execution_arn(sm, name)},
                only_if={"launch_execution": cluster.launch_execution},
            )
        except ConflictError:
            return
        deps.workflows.start(sm, name, cluster_service.launch_input(deps, cluster))
        self.found("launch_resumed", cluster.id, "resumed the interrupted launch", execution=name)

    def to_teardown(self, cluster: Cluster, why: str) -> None:
        record = cluster_service.request_teardown(
            self.deps, cluster.id, reason="launch_stalled", failure={"code": "LaunchStalled", "message": why}
        )
        self.found("launch_stalled", cluster.id, "started teardown", why=why, execution=record.teardown_execution)

    # what no record explains -------------------------------------------------------------
    def orphan(self, name: str, record: Cluster | None, observed: list[Any], hourly: float) -> None:
        engine = self.deps.engine.delete_cluster(name)
        self.deps.monitor.delete_idle_alarm(name)
        self.found(
            "orphan",
            name,
            "deleted what no live record explains",
            record=f"{record.state.value} g{record.generation}" if record else None,
            resources=sorted(o.id for o in observed if o.exists),
            usd_per_hour=round(hourly, 6),
            engine_status=engine.status,
        )

    def jobs(self, cluster: Cluster) -> None:
        """Jobs whose workflow never started (the request failed after recording them) or
        was interrupted: cancelled, or tracked again."""
        from lsstctl.services import jobs as job_service

        deps = self.deps
        for job in deps.store.list_jobs(cluster.id):
            if job.state.terminal or job.generation != cluster.generation or not job.execution:
                continue
            if self.now - (_when(job.updated_at) or self.now) < self.grace:
                continue
            execution = deps.workflows.describe(job.execution)
            if execution is not None and execution.status == "RUNNING":
                continue
            if job.state == JobState.SUBMITTING and execution is None:
                why = "the submission did not complete (its request failed); submit again"
                job_service.publish_job(
                    deps,
                    deps.store.update_job(
                        cluster.id, job.job_id, state=JobState.CANCELLED, reason=why, updates={"reason": why}
                    ),
                )
                self.found("job_never_started", cluster.id, "cancelled the job", job_id=job.job_id)
            elif cluster.state == S.READY:
                name = f"{job_service.job_execution_name(job)}-r{1 + len(job.history)}"
                arn = deps.workflows.execution_arn(deps.settings.job_state_machine_arn, name)
                deps.store.update_job(
                    cluster.id, job.job_id, state=job.state, reason="tracking resumed", updates={"execution": arn}
                )
                deps.workflows.start(
                    deps.settings.job_state_machine_arn,
                    name,
                    {
                        "cluster": job.cluster,
                        "job_id": job.job_id,
                        "poll": cluster_service.poll_settings(deps),
                        "request_id": "",
                    },
                )
                self.found("job_tracking_resumed", cluster.id, "resumed tracking", job_id=job.job_id, execution=name)

    def users(self) -> None:
        """An IAM user under the control plane's path with no record: a create-user whose
        last write failed. Adopted: recorded (with the secret that holds its key)."""
        from lsstctl.services import users as user_service

        deps = self.deps
        prefix = deps.settings.user_name_prefix
        recorded = {f"{prefix}{u.name}" for u in deps.store.list_users(None)}
        for iam_name in sorted(set(deps.users.list_managed_users()) - recorded):
            owner = deps.users.owner_of(iam_name, OWNER_TAG)
            if owner is None or iam_name != f"{prefix}{owner}":
                continue  # not one the control plane created
            if user_service.adopt_user(deps, owner) is not None:
                self.found("user_adopted", "", "recorded the user its failed request created", user=owner)


def _hourly(deps: Deps, observed: list[Any]) -> float:
    """What these resources cost per hour (unpriced ones count as nothing here)."""
    from lsstctl.domain.pricing import UnknownPriceError, gb_month_to_hourly

    region = deps.settings.region
    total = 0.0
    for o in observed:
        if not o.exists:
            continue
        try:
            if o.kind == "instance" and o.state == "running":
                total += deps.catalog.instance_hourly(region, o.type)
            elif o.kind == "volume":
                total += gb_month_to_hourly(deps.catalog.ebs_gb_month(region, o.type), o.size_gib or 0)
        except UnknownPriceError:
            continue
    return total


def _meter_orphan(deps: Deps, name: str, items: list[Any], now: datetime) -> None:
    """What it has cost, into its ledger (`costs.meter_unexplained`), each pass until it is
    gone: the guard lists only its clusters' nodes when its pass is shared (over a thousand
    clusters), so this pass, which lists every node, keeps the account of what no record
    explains. A failure here never keeps an orphan from being removed."""
    if not any(o.exists for o in items):
        return
    from lsstctl.services import costs  # only with an orphan (the guard's module is large)

    try:
        costs.meter_unexplained(deps, name, items, now, costs.spot_book(deps, items))
    except Exception:
        logger.warning("an orphan's cost was not measured", extra={"cluster": name}, exc_info=True)


def reconcile(deps: Deps) -> dict[str, Any]:
    """One pass (see the module docstring). Safe to run twice at once: every action is a
    conditional write or a converging call.

    The pass exists for the minutes when AWS fails, so it never stops at a failure: each
    of its four reads is retried with backoff, and a read that still fails only disables
    the rules that need it (no orphan is judged without the inventory, the engine's list and
    the records; a failed teardown is retried as if its cluster were still billing); every
    cluster, orphan and alarm is handled on its own. What it could not do is in its record
    (`unread`, `error` findings) and is tried again on the next pass."""
    run = Pass(deps)
    # AWS first, then the records (see above).
    observed = run.read("inventory", lambda: deps.inventory.observe(run.now))
    engine_clusters = run.read("engine clusters", deps.engine.list_clusters)
    alarm_names = run.read("idle alarms", deps.monitor.list_idle_alarms)
    billing = run.read("billing records", deps.store.list_billing_clusters)
    engine = {c.name: c for c in engine_clusters or []}
    alarms = set(alarm_names) if alarm_names is not None else None
    present = {name for name, items in (observed or {}).items() if any(o.exists for o in items)} | set(engine)
    aws_known = observed is not None and engine_clusters is not None
    records = {c.id: c for c in billing or []}

    for name, cluster in sorted(records.items()):
        with run.item("cluster", name):
            if cluster.state == S.TEARING_DOWN:
                run.teardown(cluster)
            elif cluster.state == S.FAILED:
                run.failed(cluster, name in present or not aws_known)
            elif cluster.state in LAUNCHING:
                run.launch(cluster)
            elif cluster.state == S.READY and alarms is not None and name not in alarms:
                deps.monitor.ensure_idle_alarm(name, cluster.spec.idle_minutes)
                run.found("alarm_missing", name, "recreated the idle alarm")
            if cluster.state == S.READY:
                run.jobs(cluster)

    # Judging what no record explains needs AWS's view and the records, all of them.
    for name in sorted(present - set(records)) if aws_known and billing is not None else []:
        with run.item("orphan", name):
            record = deps.store.find_cluster(name)
            if record is not None and record.state != S.DELETED:
                continue  # written after the index was read: next pass
            items = (observed or {}).get(name, [])
            _meter_orphan(deps, name, items, run.now)
            run.orphan(name, record, items, _hourly(deps, items))

    orphans = {f["cluster"] for f in run.findings if f["kind"] == "orphan"}
    for name in sorted(alarms - orphans) if alarms is not None and billing is not None else []:
        with run.item("alarm", name):
            record = records.get(name)
            if record is None or record.state not in ACTIVE:
                deps.monitor.delete_idle_alarm(name)
                run.found("stray_alarm", name, "deleted the idle alarm of a cluster that is not running")

    with run.item("users", ""):
        run.users()

    with run.item("stack cache", ""):  # its retention: no cluster used it for its retention period
        if billing is not None:
            retired = stack_cache.retire_if_unused(deps, run.now, list(records.values()))
            if retired is not None:
                run.found(
                    "stack_cache_unused",
                    "",
                    "deleted the stack cache"
                    if retired["deleted"]
                    else "deleting the stack cache (its mount targets first)",
                    **retired,
                )

    try:
        retrying(
            lambda: deps.store.record_reconciliation(iso(run.now), run.findings),
            attempts=run.attempts,
            base_seconds=run.backoff,
            sleep=deps.sleep,
        )
    except Exception:  # the log has every finding; the next pass records its own
        logger.exception("could not record the reconciler pass")
    return {
        "at": iso(run.now),
        "clusters": len(records),
        "present_in_aws": len(present),
        "unread": run.unread,
        "unaudited": run.unaudited,
        "findings": run.findings,
    }
