"""`make bench-cost`: does the spend guard keep every cluster under its budget?

Many clusters (budgets $5-$5,000, burn $0.03-$200/h, steady, bursty and idle job patterns,
slow teardowns, a lost alarm, a dead head node, a failing archive) run at once on the local
emulator: the real control plane (API services, the real ASL executed by moto's
interpreter, the real Lambda handlers, the guard, the idle alarms through EventBridge),
on a clock the simulation controls. Every Step Functions Wait and every EC2 launch and
termination time follows that clock, so a day passes in minutes; what the workflows do
between ticks runs for real.

What the simulation plays itself is what is outside the control plane: Slurm's demand
(compute nodes scaled as ParallelCluster's clustermgtd would, the queue depth the head
node's publisher would send) and CloudWatch's alarm evaluation (moto has none).

Every scenario whose demand exceeds its budget runs twice in the same run: with the scale
governor (the default: as the budget runs down, the reachable fleet is capped on the head
node, lsstctl.domain.governor) and without it (every queue may reach MaxCount until the
budget teardown), so the budget each leaves unused can be compared. The simulated
clustermgtd starts no node above the cap the head node was given.

The same scenarios are then replayed, on the same price catalog, under the policies people
use today: AWS Budgets alone (its notification 8-12 hours late, then budget actions stop
the instances), ParallelCluster's idle scale-down alone, and the seed tutorial's
`pcluster stop`. Their head node and storage keep billing; they are measured after 30 days.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
sys.path.insert(0, str(ROOT))

TICK = 60  # seconds: the guard's interval
OWNER_MONTHLY = {"shared": 100.0}  # owners' monthly budgets the bench sets
PROJECTS = {"grant": (["member0", "member1"], 60.0)}  # projects: members, budget
SCALEDOWN_IDLE_MINUTES = 10  # ParallelCluster's default ScaledownIdletime
ANCHOR_HORIZON_HOURS = 30 * 24
# What EC2's spot price history answers in the simulation (USD/h by type and zone): realistic
# discounts of 55-65 % off on-demand ($0.68/h for c5.4xlarge), different in every zone, so a
# spot node must be charged its own zone's price in the ledger and in the final record alike.
SPOT_PRICES = {
    ("c5.4xlarge", "us-east-1a"): 0.2672,
    ("c5.4xlarge", "us-east-1b"): 0.2911,
    ("c5.4xlarge", "us-east-1c"): 0.2458,
    ("c5.4xlarge", "us-east-1d"): 0.3046,
    ("c5.4xlarge", "us-east-1f"): 0.2784,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    budget: float
    compute: str
    max_nodes: int
    head: str = "t3.medium"
    storage_gib: int = 100
    # Demand: jobs queued for this long after ready, then none. By default, work worth twice
    # the budget at full size (so that without a guard the budget would be spent twice over).
    work_hours: float | None = None
    bursty: bool = False  # 30 min at max_nodes, 30 min at a fifth of it
    idle_minutes: int = 30
    lifetime_hours: float = 40.0
    lost_alarm: bool = False  # the idle alarm's events never arrive
    dead_head_after_hours: float | None = None  # the head node dies (publishes and answers nothing)
    # The publisher dies (its cron entry is lost) while Slurm still runs the jobs: the cluster
    # is busy, not idle; publishing resumes once the control plane's probe has restored it.
    publisher_dies_after_hours: float | None = None
    spot: bool = False  # the compute queue runs on spot, charged by SPOT_PRICES
    failing_archive: bool = False
    slow_teardown: bool = False
    # The owner raises the budget to this (PATCH /clusters/{name}) this many hours after ready.
    raise_budget: tuple[float, float] | None = None
    traced: bool = False  # record spend, nodes and cap each minute (the README's figure)
    owner: str | None = None  # an owner several scenarios share (else one owner each)
    project: str | None = None  # a project (grant) it draws on
    # A preset's spec (GET /quote's subject): `max_nodes` of its first queue run for
    # `work_hours`, and the ledger's spend over those hours is compared with the quote.
    preset: str | None = None

    def owner_at(self, index: int) -> str:
        return self.owner or f"owner{index:02d}"

    @property
    def final_budget(self) -> float:
        return self.raise_budget[1] if self.raise_budget else self.budget

    @property
    def over_budget(self) -> bool:
        """Demand worth more than the budget: the budget ends it (the governor's subject)."""
        return self.work_hours is None

    @property
    def demand_hours(self) -> float:
        if self.work_hours is not None:
            return self.work_hours
        from lsstctl.domain.pricing import load_catalog

        catalog = load_catalog()
        node = catalog.instance_hourly("us-east-1", self.compute)
        if self.spot:
            node = max(usd for (kind, _zone), usd in SPOT_PRICES.items() if kind == self.compute)
        full = catalog.instance_hourly("us-east-1", self.head) + self.max_nodes * node
        return 2 * self.final_budget / full

    def nodes_at(self, hours: float) -> int:
        """Compute nodes running `hours` after ready (Slurm resumes and suspends them)."""
        if hours >= self.demand_hours + SCALEDOWN_IDLE_MINUTES / 60:
            return 0
        if self.bursty and int(hours * 2) % 2 == 1:
            return max(1, self.max_nodes // 5)
        return self.max_nodes

    def jobs_at(self, hours: float) -> int:
        return 3 if hours < self.demand_hours else 0

    @property
    def idle_kind(self) -> bool:
        return self.work_hours is not None and self.work_hours < self.lifetime_hours


SCENARIOS = [
    # budget-bound: demand would cost more than the budget
    Scenario("b5-steady-0.5/h", 5, "c5.large", 5),
    Scenario("b5-bursty-4.8/h", 5, "c5.4xlarge", 7, bursty=True),
    Scenario("b50-steady-4.8/h", 50, "c5.4xlarge", 7),
    Scenario("b50-bursty-46/h", 50, "c5.18xlarge", 15, bursty=True, traced=True),
    Scenario("b500-steady-46/h", 500, "c5.18xlarge", 15),
    Scenario("b500-bursty-200/h", 500, "c5.18xlarge", 65, bursty=True),
    Scenario("b1000-steady-200/h", 1000, "c5.18xlarge", 65),
    # lifetime-bound: a trickle that would take 150 hours to reach its budget
    Scenario("b5-steady-0.03/h", 5, "t3.micro", 1, head="t3.small", storage_gib=20, lifetime_hours=6, work_hours=300),
    # idle: the work ends, the cluster must go
    Scenario("idle-b50-4.8/h", 50, "c5.4xlarge", 7, work_hours=2),
    Scenario("idle-lost-alarm", 50, "c5.4xlarge", 7, work_hours=2, lost_alarm=True),
    Scenario("idle-dead-head-node", 50, "c5.4xlarge", 7, work_hours=3, dead_head_after_hours=1),
    # busy, not idle: the publisher dies after 1 h while Slurm runs jobs until 3 h
    Scenario("busy-publisher-dies", 50, "c5.4xlarge", 7, work_hours=3, publisher_dies_after_hours=1),
    Scenario("idle-b5000-200/h", 5000, "c5.18xlarge", 65, work_hours=1, idle_minutes=15),
    Scenario("idle-failing-archive", 50, "c5.4xlarge", 7, work_hours=1, idle_minutes=20, failing_archive=True),
    # a spot fleet, each zone its own price (SPOT_PRICES)
    Scenario("spot-b20-steady-1.9/h", 20, "c5.4xlarge", 7, spot=True),
    # the dearest instances on a small budget: accepted (capped) and used, not killed at once
    Scenario("dearest-b20-78/h", 20, "c5n.18xlarge", 20),
    # the owner raises the budget mid-run (PATCH): the cap rises again
    Scenario("raised-b50-to-150-46/h", 50, "c5.18xlarge", 15, bursty=True, raise_budget=(0.5, 150)),
    # one owner's five clusters under a $100 monthly budget (a sixth launch is refused)
    *[Scenario(f"owner-{i}-of-5-b20", 20, "c5.4xlarge", 7, bursty=True, owner="shared") for i in range(1, 6)],
    # a $60 grant shared by two owners' three clusters (a fourth launch is refused)
    *[
        Scenario(f"grant-{i}-of-3-b20", 20, "c5.4xlarge", 7, owner=f"member{i % 2}", project="grant")
        for i in range(1, 4)
    ],
    # a quote kept: the small preset with 2 of its 4 nodes busy for 8 hours, then its lifetime ends it
    Scenario("quoted-small-2-nodes-8h", 100, "m6i.xlarge", 2, work_hours=8, lifetime_hours=8.5, preset="small"),
    # slow teardowns (40 minutes to delete instead of 10)
    Scenario("slow-b50-steady-4.8/h", 50, "c5.4xlarge", 7, slow_teardown=True),
    Scenario("slow-b500-bursty-200/h", 500, "c5.18xlarge", 65, bursty=True, slow_teardown=True),
]


# the control plane, on the emulator --------------------------------------------------------
@dataclass
class Outcome:
    scenario: Scenario
    governor: bool = True
    reason: str | None = None
    final_spend: float | None = None
    outcome: str | None = None
    teardown_started_hours: float | None = None  # after ready
    remaining_burn: float = 0.0
    ready_at: Any = None
    idle_since_hours: float | None = None  # when the queue became empty for good
    least_cap: int | None = None  # the lowest node cap the governor applied
    trace: list[list[float]] | None = None  # [hours after ready, spend, nodes, cap] each minute
    ceiling_note: str | None = None  # what one launch more under its shared ceiling was told
    quoted_usd: float | None = None  # GET /quote's run_usd for a preset scenario
    publisher_died: bool = False
    publisher_restored_hours: float | None = None  # after ready: when the probe restored it
    spot_charged: list[float] | None = None  # the hourly prices the ledger charged spot nodes
    spot_zone: str | None = None  # the zone its nodes ran in (the cluster's subnet's)
    ledger_spend: float | None = None  # the ledger's last measurement (the final record's match)


def _spec(s: Scenario, name: str) -> dict[str, Any]:
    if s.preset:  # the preset as POST /clusters makes it (its queues, head node and storage)
        return {
            "preset": s.preset,
            "name": name,
            "stack_tag": "w_2026_47",
            "budget_usd": s.budget,
            "idle_minutes": s.idle_minutes,
            "max_lifetime_hours": s.lifetime_hours,
        }
    return {
        "project": s.project,
        "name": name,
        "head_node_type": s.head,
        "queues": [
            {
                "name": "compute",
                "instance_types": [s.compute],
                "min_nodes": 0,
                "max_nodes": s.max_nodes,
                "capacity_type": "spot" if s.spot else "ondemand",
            }
        ],
        "shared_storage": {"type": "ebs", "size_gib": s.storage_gib},
        "stack_tag": "w_2026_47",
        "budget_usd": s.budget,
        "idle_minutes": s.idle_minutes,
        "max_lifetime_hours": s.lifetime_hours,
    }


def _node_cap(root: str, queue: str) -> int | None:
    """The cap the head node was given for `queue` (NODE_CAP_SCRIPT keeps it in NODE_CAP_DIR)."""
    from lsstctl.domain.scripts import NODE_CAP_DIR

    try:
        return int((Path(root + NODE_CAP_DIR) / queue).read_text())
    except (OSError, ValueError):
        return None


PUBLISHER_CRON = "/etc/cron.d/lsstctl-queue-depth"  # lsstctl.domain.scripts.render_publisher_install


def simulated_squeue(workdir: Path) -> Path:
    """The simulation's Slurm as commands on the head nodes see it: `squeue` lists a line per
    pending or running job, its working directory under its cluster's node root (what the
    control plane's queue probe and the publisher count). Returns the file the simulation
    writes that listing to each minute."""
    import shlex

    from lsstctl.emulator import glue

    bin_dir = workdir / "simulated-slurm"
    bin_dir.mkdir(exist_ok=True)
    listing = bin_dir / "queue"
    listing.write_text("")
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\ncat {shlex.quote(str(listing))}\n")
    squeue.chmod(0o755)
    shell = glue.current_shell()
    shell.env["PATH"] = f"{bin_dir}:{shell.env.get('PATH', os.environ.get('PATH', ''))}"
    return listing


def run_phase(
    scenarios: list[Scenario], *, delete_seconds: int, horizon_hours: float, verbose: bool, governor: bool = True
) -> list[Outcome]:
    import boto3

    from lsstctl import wiring
    from lsstctl.domain.models import ClusterChange, ClusterSpec, ClusterState, ProjectSpec, QuotaSpec
    from lsstctl.emulator import glue
    from lsstctl.emulator.alarms import evaluate_idle_alarms
    from lsstctl.emulator.clock import VirtualClock
    from lsstctl.emulator.runtime import Emulator
    from lsstctl.errors import QuotaExceededError
    from lsstctl.services import clusters, ledgers, quotas
    from lsstctl.services.identity import Principal

    workdir = Path(tempfile.mkdtemp(prefix="lsstctl-bench-"))
    emulator = Emulator(workdir, slurm=False, poll_seconds=TICK, provision_seconds=300)
    emulator.start()
    glue.set_spot_prices(SPOT_PRICES)
    listing = simulated_squeue(workdir)
    clock = VirtualClock()
    try:
        os.environ["LSSTCTL_LOCAL_DELETE_SECONDS"] = str(delete_seconds)
        os.environ["LSSTCTL_GOVERNOR"] = "true" if governor else "false"
        wiring.reset()
        wiring.use_clock(clock)
        glue.set_clock(clock.naive)
        glue.use_virtual_waits(clock)
        deps = wiring.deps()
        cloudwatch, lam = boto3.client("cloudwatch"), boto3.client("lambda")
        outcomes: dict[str, Outcome] = {}
        admin = Principal("bench-admin", is_admin=True)
        for owner, monthly in OWNER_MONTHLY.items():
            quotas.set_quota(deps, admin, owner, QuotaSpec(monthly_budget_usd=monthly))
        for project, (members, budget) in PROJECTS.items():
            quotas.set_project(deps, admin, project, ProjectSpec(members=members, budget_usd=budget))
        for i, s in enumerate(scenarios):
            launched = clusters.launch_cluster(
                deps, Principal(s.owner_at(i)), ClusterSpec.model_validate(_spec(s, f"sim{i:02d}"))
            )
            name = launched.id  # what AWS and the records call it
            outcomes[name] = Outcome(s, governor=governor)
            if s.preset:
                from lsstctl.services.quotes import quote

                asked = quote(deps, Principal(s.owner_at(i)), preset=s.preset, hours=s.demand_hours, nodes=s.max_nodes)
                outcomes[name].quoted_usd = asked["run_usd"]
            if s.failing_archive:
                # Outputs that cannot be copied: the path is a file, so the archive fails.
                outputs = workdir / "nodes" / name / "shared"
                outputs.mkdir(parents=True, exist_ok=True)
                (outputs / "outputs").write_text("not a directory")
        # One launch more for each shared ceiling: refused, with what is left.
        refusals: dict[str, str] = {}
        shared = {(s.project or s.owner): (s.owner, s.project) for s in scenarios if s.owner}
        for owner, project in (shared[key] for key in sorted(shared)):
            extra = Scenario("one-more", 20, "c5.4xlarge", 7, owner=owner, project=project)
            try:
                clusters.launch_cluster(deps, Principal(owner), ClusterSpec.model_validate(_spec(extra, "one-more")))
                refusals[f"{project or owner}"] = "ACCEPTED (the ceiling did not hold)"
            except QuotaExceededError as error:
                refusals[f"{project or owner}"] = error.message
        settle()
        nodes: dict[str, int] = {}
        raised: set[str] = set()
        started = time.monotonic()
        ticks = 0
        timing = {"alarms": 0.0, "guard": 0.0, "settle": 0.0}
        while True:
            ticks += 1
            records = {c.id: c for c in deps.store.list_billing_clusters()}
            queued: list[str] = []
            active = [n for n, c in records.items() if c.state not in {ClusterState.FAILED}]
            if not active or (clock() - outcomes_start(outcomes, clock)) > timedelta(hours=horizon_hours):
                break
            for name, record in records.items():
                out = outcomes[name]
                if record.state != ClusterState.READY:
                    continue
                if out.ready_at is None:
                    out.ready_at = record.entered(ClusterState.READY)
                    if out.scenario.lost_alarm:
                        deps.monitor.delete_idle_alarm(name)  # its events will never come
                hours = (clock() - out.ready_at).total_seconds() / 3600
                if out.scenario.raise_budget and hours >= out.scenario.raise_budget[0] and name not in raised:
                    clusters.change_cluster(
                        deps,
                        Principal(record.owner),
                        record.name,
                        ClusterChange(budget_usd=out.scenario.raise_budget[1]),
                    )
                    raised.add(name)
                want = out.scenario.nodes_at(hours)
                # clustermgtd starts no node above the cap the head node was given
                cap = _node_cap(clusters.node_root(deps, record), "compute")
                if cap is not None:
                    want = min(want, cap)
                    out.least_cap = cap if out.least_cap is None else min(out.least_cap, cap)
                if nodes.get(name) != want:
                    nodes[name] = deps.engine.set_compute_nodes(name, "compute", out.scenario.compute, want)
                if out.scenario.traced or out.scenario.preset:
                    ledger = ledgers.current(deps, name, record.generation) or {}
                    out.trace = (out.trace or []) + [
                        [
                            round(hours, 4),
                            round(ledger.get("spend_usd", 0.0), 4),
                            nodes[name],
                            out.scenario.max_nodes if cap is None else cap,
                        ]
                    ]
                root = clusters.node_root(deps, record)
                jobs = out.scenario.jobs_at(hours)
                queued += [f"{root}/shared/outputs/job{k}" for k in range(jobs)]
                dead = out.scenario.dead_head_after_hours is not None and hours >= out.scenario.dead_head_after_hours
                if dead and record.head_node_instance_id:
                    glue.set_unreachable(record.head_node_instance_id)  # SSM cannot reach it either
                if publishing(out, Path(root + PUBLISHER_CRON), hours) and not dead:
                    deps.monitor.publish_queue_depth(name, jobs, clock())
            listing.write_text("".join(line + "\n" for line in queued))
            glue.expire_terminated_instances(clock.naive())
            t1 = time.monotonic()
            evaluate_idle_alarms(cloudwatch, clock())
            t2 = time.monotonic()
            lam.invoke(FunctionName="lsstctl-guard", Payload=b"{}")
            t3 = time.monotonic()
            settle()
            clock.advance(TICK)
            settle()
            t5 = time.monotonic()
            timing["alarms"] += t2 - t1
            timing["guard"] += t3 - t2
            timing["settle"] += t5 - t3
            if verbose and ticks % 60 == 0:
                print(
                    f"  [{os.getpid()}] {ticks // 60:3d} h simulated, {len(active)} clusters billing, "
                    f"{time.monotonic() - started:5.0f} s real; "
                    + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()),
                    flush=True,
                )
        for name, out in outcomes.items():
            record = deps.store.get_cluster(name)
            summary = record.teardown or {}
            out.reason, out.outcome = record.teardown_reason, summary.get("outcome")
            out.final_spend = summary.get("final_spend_usd")
            ledger = ledgers.current(deps, name, record.generation) or {}
            out.ledger_spend = ledger.get("spend_usd")
            if out.scenario.spot:
                subnet = boto3.client("ec2").describe_subnets(SubnetIds=[deps.settings.cluster_subnet_id])
                out.spot_zone = subnet["Subnets"][0]["AvailabilityZone"]
                out.spot_charged = sorted(
                    {
                        round(float(r["hourly_usd"]), 4)
                        for r in ledger.get("breakdown", [])
                        if r.get("pricing") == "spot"
                    }
                )
            out.remaining_burn = summary.get("remaining_burn_usd_per_hour", 0.0)
            if out.ready_at is None:
                out.ready_at = record.entered(ClusterState.READY)
            start = record.entered(ClusterState.TEARING_DOWN)
            if start and out.ready_at:
                out.teardown_started_hours = (start - out.ready_at).total_seconds() / 3600
            s = out.scenario
            if s.owner:
                out.ceiling_note = refusals.get(s.project or s.owner)
            if s.idle_kind:
                out.idle_since_hours = min(s.demand_hours, s.dead_head_after_hours or s.demand_hours)
        return list(outcomes.values())
    finally:
        glue.use_virtual_waits(None)
        wiring.use_clock(None)
        emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def publishing(out: Outcome, cron: Path, hours: float) -> bool:
    """Whether the head node's publisher runs now: it dies (its cron entry lost) at the
    scenario's hour, and runs again once the control plane's probe has put the entry back."""
    dies = out.scenario.publisher_dies_after_hours
    if dies is None or hours < dies:
        return True
    if not out.publisher_died:
        cron.unlink(missing_ok=True)
        out.publisher_died = True
        return False
    if out.publisher_restored_hours is None and cron.exists():
        out.publisher_restored_hours = round(hours, 3)
    return out.publisher_restored_hours is not None


def outcomes_start(outcomes: dict[str, Outcome], clock: Any) -> Any:
    readies = [o.ready_at for o in outcomes.values() if o.ready_at]
    return min(readies) if readies else clock()


def settle(timeout: float = 300) -> None:
    """Wait until every running execution is blocked in a Wait (or done) and no SSM command
    or EventBridge delivery is under way: then the simulated world is at rest."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends as stepfunctions_backends

    from lsstctl import wiring
    from lsstctl.emulator import glue

    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline:
        running = sum(
            1
            for account in stepfunctions_backends.values()
            for backend in account.values()
            for machine in backend.state_machines
            for execution in machine.executions
            if execution.status == "RUNNING"
        )
        waiting = getattr(wiring._clock, "waiting", 0)
        calm = calm + 1 if (running == waiting and glue.busy() == 0) else 0
        if calm >= 3:
            return
        time.sleep(0.005)
    import threading

    names = sorted(t.name for t in threading.enumerate())
    raise RuntimeError(
        f"the emulator did not settle (running {running}, waiting {waiting}, busy {glue.busy()}): {names}"
    )


# the anchors, on the same scenarios and prices ----------------------------------------------
def anchors(s: Scenario, catalog: Any, region: str = "us-east-1") -> dict[str, dict[str, float]]:
    head = catalog.instance_hourly(region, s.head) + catalog.ebs_gb_month(region, "gp3") * s.storage_gib / 730
    node = catalog.instance_hourly(region, s.compute)
    ready_hours = 0.1  # provisioning and stack install
    minutes = int(ANCHOR_HORIZON_HOURS * 60)

    def run(stop_instances_at_h: float | None, stop_compute_at_h: float | None) -> tuple[float, float]:
        """(spend after 30 days, when spend crossed the budget in hours or inf)."""
        spend, crossed = 0.0, math.inf
        for m in range(minutes):
            h = m / 60
            instances_on = stop_instances_at_h is None or h < stop_instances_at_h
            compute_on = instances_on and (stop_compute_at_h is None or h < stop_compute_at_h)
            burn = catalog.ebs_gb_month(region, "gp3") * s.storage_gib / 730
            if instances_on:
                burn += head - catalog.ebs_gb_month(region, "gp3") * s.storage_gib / 730
            if compute_on and h >= ready_hours:
                burn += node * s.nodes_at(h - ready_hours)
            spend += burn / 60
            if spend >= s.budget and crossed is math.inf:
                crossed = h
        return spend, crossed

    # ParallelCluster's idle scale-down alone: compute follows demand, the rest bills on.
    idle_spend, crossed = run(None, None)
    # AWS Budgets alone: 8-12 h after crossing, a budget action stops the instances.
    budgets = [run(crossed + delay, None)[0] if crossed < math.inf else idle_spend for delay in (8, 12)]
    # The seed tutorial: `pcluster stop` when the work is done; head node and volumes bill on.
    stop_spend, _ = run(None, ready_hours + min(s.demand_hours, ANCHOR_HORIZON_HOURS))
    return {
        "AWS Budgets alone (8-12 h late)": {"spend": max(budgets), "teardown_h": math.inf},
        "ParallelCluster idle scale-down alone": {"spend": idle_spend, "teardown_h": math.inf},
        "seed tutorial's pcluster stop": {"spend": stop_spend, "teardown_h": math.inf},
    }


# report -------------------------------------------------------------------------------------
USED_TARGET = 0.98  # of the budget, in every scenario whose demand exceeds it (governor on)


def report(outcomes: list[Outcome], real_seconds: float) -> bool:
    from lsstctl.domain.pricing import load_catalog

    catalog = load_catalog()
    ours, off = "lsstctl guard with the governor", "lsstctl guard, governor off"
    rows: dict[str, list[dict[str, float]]] = {ours: [], off: []}
    passed_checks = True
    without = {o.scenario.name: o for o in outcomes if not o.governor}
    print(
        f"\n{'scenario':<24} {'budget':>8} {'ended by':>11} {'final $':>10} {'used':>7} {'least cap':>9} "
        f"{'idle->td':>9} {'governor off: used':>19}  notes"
    )
    for o in (o for o in outcomes if o.governor):
        s = o.scenario
        budget = s.final_budget
        over = (o.final_spend or 0) - budget
        latency = None
        if (
            s.idle_kind
            and o.reason == "idle"
            and o.teardown_started_hours is not None
            and o.idle_since_hours is not None
        ):
            latency = (o.teardown_started_hours - o.idle_since_hours) * 60 - s.idle_minutes
        notes = []
        if o.outcome == "failed":
            notes.append(f"archive failed: storage kept, ${o.remaining_burn:.4f}/h")
        if s.raise_budget:
            notes.append(f"budget raised to ${s.raise_budget[1]:.0f} {s.raise_budget[0]:.1f} h after ready")
        kept, note = special_checks(o)
        passed_checks = passed_checks and kept
        notes += [note] if note else []
        rows[ours].append(
            {
                "over": over,
                "budget": budget,
                "used": (o.final_spend or 0) / budget,
                "over_budget": float(s.over_budget),
                "latency": latency if latency is not None else math.nan,
            }
        )
        other = without.get(s.name)
        off_text = ""
        if other is not None:
            rows[off].append(
                {
                    "over": (other.final_spend or 0) - budget,
                    "budget": budget,
                    "used": (other.final_spend or 0) / budget,
                    "over_budget": float(s.over_budget),
                    "latency": math.nan,
                }
            )
            off_text = f"{100 * (other.final_spend or 0) / budget:.1f}% ({other.reason})"
        print(
            f"{s.name:<24} {budget:>8.0f} {str(o.reason):>11} {o.final_spend or 0:>10.2f} "
            f"{100 * (o.final_spend or 0) / budget:>6.1f}% {'' if o.least_cap is None else o.least_cap:>9} "
            f"{'' if latency is None else f'{latency:+.1f} min':>9} {off_text:>19}  {'; '.join(notes)}"
        )
        for policy, result in anchors(s, catalog).items():
            rows.setdefault(policy, []).append(
                {
                    "over": result["spend"] - budget,
                    "budget": budget,
                    "used": 1.0,
                    "over_budget": float(s.over_budget),
                    "latency": math.inf if s.idle_kind else math.nan,
                }
            )

    print(
        f"\n{'policy':<40} {'worst overspend':>16} {'(% of budget)':>14} {'least budget used':>18} "
        f"{'median':>7} {'idle->teardown':>15}"
    )
    passed = passed_checks
    for policy, results in rows.items():
        if not results:
            continue
        worst = max(results, key=lambda r: r["over"])
        bound = [r["used"] for r in results if r["over_budget"]]
        latencies = [r["latency"] for r in results if not math.isnan(r["latency"])]
        least = min(bound) if bound else math.nan
        median_used = statistics.median(bound) if bound else math.nan
        if policy in (ours, off):
            idle_text = f"{min(latencies):+.1f}..{max(latencies):+.1f} min" if latencies else "n/a"
            passed = passed and worst["over"] <= 0
        else:
            idle_text = "never deletes"
        if policy == ours:
            passed = (
                passed
                and (not bound or least >= USED_TARGET)
                and (not latencies or max(abs(x) for x in latencies) <= TICK / 60)
            )
        print(
            f"{policy:<40} {max(0.0, worst['over']):>15.2f}$ {100 * max(0.0, worst['over']) / worst['budget']:>13.1f}% "
            f"{100 * least:>17.1f}% {100 * median_used:>6.1f}% {idle_text:>15}"
        )
    print(
        f"\ntarget: zero overspend; with the governor >= {100 * USED_TARGET:.0f}% of the budget used wherever demand "
        f"exceeds it; teardown within one guard interval ({TICK} s) of the idle threshold -> "
        f"{'met' if passed else 'NOT met'}"
    )
    print(f"{len(outcomes)} runs, {real_seconds:.0f} s real time; anchors measured 30 days after launch")
    ceilings(outcomes)
    passed = quotes_kept(outcomes) and passed
    for o in outcomes:
        if o.trace and o.scenario.traced:
            figure(o)
    return passed


QUOTE_TOLERANCE = 0.02


def special_checks(o: Outcome) -> tuple[bool, str]:
    """A busy cluster whose publisher died is not ended as idle while its jobs run; a spot
    fleet is charged its own zone's price, and its final record is its ledger's last figure."""
    s = o.scenario
    if s.publisher_dies_after_hours is not None:
        kept = (
            o.reason == "idle"
            and o.teardown_started_hours is not None
            and o.teardown_started_hours >= s.demand_hours
            and o.publisher_restored_hours is not None
        )
        restored = "never" if o.publisher_restored_hours is None else f"{o.publisher_restored_hours:.2f} h"
        return kept, (
            f"publisher died {s.publisher_dies_after_hours:g} h, restored by the probe {restored}; jobs ran to "
            f"{s.demand_hours:g} h{'' if kept else ' -- ENDED WHILE BUSY'}"
        )
    if s.spot:
        charged = o.spot_charged or []
        matches = (
            o.final_spend is not None and o.ledger_spend is not None and abs(o.final_spend - o.ledger_spend) < 1e-6
        )
        zone_price = SPOT_PRICES.get((s.compute, o.spot_zone or ""))
        kept = zone_price is not None and charged == [round(zone_price, 4)] and matches
        return kept, (
            f"spot nodes charged ${', $'.join(f'{usd:.4f}' for usd in charged)}/h ({o.spot_zone}'s "
            f"${zone_price or 0:.4f}); final "
            f"{'=' if matches else '!='} ledger ${o.ledger_spend or 0:.4f}"
        )
    return True, ""


def quotes_kept(outcomes: list[Outcome]) -> bool:
    """GET /quote's cost of a preset run against what the guard's ledger recorded over those hours."""
    kept = True
    for o in outcomes:
        if o.quoted_usd is None or not o.trace:
            continue
        hours = o.scenario.demand_hours
        at_start = o.trace[0]
        at_end = min(o.trace, key=lambda row: abs(row[0] - (at_start[0] + hours)))
        spent = at_end[1] - at_start[1]
        delta = (spent - o.quoted_usd) / o.quoted_usd
        ok = abs(delta) <= QUOTE_TOLERANCE
        kept = kept and ok
        print(
            f"\nquote {o.scenario.preset}, {o.scenario.max_nodes} nodes, {hours:g} h: ${o.quoted_usd:.2f}; the ledger "
            f"over {at_end[0] - at_start[0]:.2f} h after ready: ${spent:.2f} ({100 * delta:+.2f}%, target within "
            f"{100 * QUOTE_TOLERANCE:.0f}%): {'met' if ok else 'NOT met'}"
        )
    return kept


def ceilings(outcomes: list[Outcome]) -> None:
    """Each shared ceiling (an owner's monthly budget, a project's): what its clusters spent."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.governor and o.scenario.owner:
            groups.setdefault(o.scenario.project or o.scenario.owner, []).append(o)
    for key, members in sorted(groups.items()):
        ceiling = PROJECTS[key][1] if key in PROJECTS else OWNER_MONTHLY[key]
        kind = "project" if key in PROJECTS else "owner"
        spent = sum(o.final_spend or 0 for o in members)
        print(
            f"\n{kind} {key}: {len(members)} clusters spent ${spent:.2f} of its ${ceiling:.0f} "
            f"({100 * spent / ceiling:.1f}%); one launch more: {members[0].ceiling_note}"
        )


def figure(o: Outcome, minutes: int = 24, every: int = 1) -> None:
    """Spend and reachable nodes against time over a traced run's last `minutes` of READY."""
    s = o.scenario
    print(
        f"\n{s.name}, governor {'on' if o.governor else 'off'}: the last {minutes} minutes before its teardown "
        f"(# running nodes, | the cap above them)"
    )
    print(f"{'h after ready':>13} {'spend':>7} {'used':>6} {'cap':>4} {'nodes':>5}")
    for hours, spend, running, cap in o.trace[-minutes::every]:
        bar = ("#" * int(running)).ljust(int(cap), " ") + "|"
        print(
            f"{hours:>13.2f} {spend:>7.2f} {100 * spend / s.final_budget:>5.1f}% {int(cap):>4} {int(running):>5}  {bar}"
        )
    print(f"{'end':>13} {o.final_spend or 0:>7.2f} {100 * (o.final_spend or 0) / s.final_budget:>5.1f}%  ({o.reason})")


GROUPS = {
    # Each group runs in its own process and emulator (moto's EC2 is slow to describe big
    # fleets; two cores run two groups at once). Deletion takes 10 min, or 40 when slow.
    "large": lambda s: not s.slow_teardown and s.max_nodes >= 50,
    "small": lambda s: not s.slow_teardown and s.max_nodes < 50 and not s.owner,
    "shared": lambda s: s.owner is not None,  # under shared ceilings: one emulator
    "slow": lambda s: s.slow_teardown,
}


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        "scenario": o.scenario.name,
        "governor": o.governor,
        "reason": o.reason,
        "final_spend": o.final_spend,
        "outcome": o.outcome,
        "teardown_started_hours": o.teardown_started_hours,
        "remaining_burn": o.remaining_burn,
        "idle_since_hours": o.idle_since_hours,
        "least_cap": o.least_cap,
        "trace": o.trace,
        "ceiling_note": o.ceiling_note,
        "quoted_usd": o.quoted_usd,
        "publisher_died": o.publisher_died,
        "publisher_restored_hours": o.publisher_restored_hours,
        "spot_charged": o.spot_charged,
        "spot_zone": o.spot_zone,
        "ledger_spend": o.ledger_spend,
    }


def _outcome_from(data: dict[str, Any]) -> Outcome:
    name = data.pop("scenario")
    scenario = next(s for s in SCENARIOS if s.name == name)
    return Outcome(scenario, **data)


def _chosen(group: str, governor: bool, only: str | None) -> list[Scenario]:
    """A group's scenarios; without the governor only those whose demand exceeds the budget
    (the comparison), the others end by idleness or lifetime either way."""
    return [s for s in SCENARIOS if GROUPS[group](s) and (not only or only in s.name) and (governor or s.over_budget)]


def run_group(group: str, governor: bool, only: str | None, out: Path, verbose: bool) -> None:
    chosen = _chosen(group, governor, only)
    delete_seconds = 2400 if group == "slow" else 600
    outcomes = (
        run_phase(chosen, delete_seconds=delete_seconds, horizon_hours=50, verbose=verbose, governor=governor)
        if chosen
        else []
    )
    out.write_text(json.dumps([_outcome_json(o) for o in outcomes]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run scenarios whose name contains this")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--governor",
        choices=["both", "on", "off"],
        default="both",
        help="run with the scale governor, without it, or both (default) for comparison",
    )
    parser.add_argument("--jobs", type=int, default=3, help="simulations at once (each its own emulator)")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="print the report of an earlier run (its .emulator/bench-cost.json) instead of running",
    )
    parser.add_argument("--group", choices=sorted(GROUPS), help=argparse.SUPPRESS)
    parser.add_argument("--governor-off", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from lsstctl.emulator.stopping import stop_on_signals

    stop_on_signals()  # SIGTERM and SIGHUP clean up like Ctrl-C
    if args.report:
        return 0 if report([_outcome_from(d) for d in json.loads(args.report.read_text())], math.nan) else 1
    if args.group:
        run_group(args.group, not args.governor_off, args.only, args.out, verbose=not args.quiet)
        return 0
    import subprocess

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="lsstctl-bench-results-"))
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.governor]
    pending = []
    for governor in modes:
        for group in GROUPS:
            count = len(_chosen(group, governor, args.only))
            if not count:
                continue
            label = f"{group}{'' if governor else '-off'}"
            command = [sys.executable, __file__, "--group", group, "--out", str(tmp / f"{label}.json")]
            command += [] if governor else ["--governor-off"]
            command += ["--only", args.only] if args.only else []
            command += ["--quiet"] if args.quiet else []
            pending.append((label, count, command))
    running: dict[str, subprocess.Popen[bytes]] = {}
    failed = []
    while pending or running:
        while pending and len(running) < args.jobs:
            label, count, command = pending.pop(0)
            print(f"group {label}: {count} scenarios", flush=True)
            running[label] = subprocess.Popen(command)
        time.sleep(0.5)
        for label, worker in list(running.items()):
            if worker.poll() is not None:
                del running[label]
                if worker.returncode != 0:
                    failed.append(label)
    if failed:
        print(f"simulation groups failed: {failed}")
        return 2
    outcomes = [_outcome_from(d) for f in sorted(tmp.glob("*.json")) for d in json.loads(f.read_text())]
    shutil.rmtree(tmp, ignore_errors=True)
    outcomes.sort(key=lambda o: (SCENARIOS.index(o.scenario), not o.governor))
    ok = report(outcomes, time.monotonic() - started)
    Path(ROOT / ".emulator").mkdir(exist_ok=True)
    (ROOT / ".emulator" / "bench-cost.json").write_text(json.dumps([_outcome_json(o) for o in outcomes], indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
