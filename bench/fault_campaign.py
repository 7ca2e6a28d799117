"""`make bench-faults`: the control plane on AWS's bad days, end to end.

N full lifecycles (user -> cluster -> job -> delete), a few at a time, through the HTTP
API of the local emulator, while a share of the control plane's AWS calls fail the way
AWS fails (throttling, 500/503), in one of two modes (lsstctl/emulator/faults.py):

- `outlast`: failures that outlast the SDK's retries (the caller sees every one);
- `sdk`: failing HTTP requests, before the SDK's retries (botocore retries them).

The client behaves as the API asks: a 503 (or a 409 `request_in_progress`) is repeated
after `Retry-After` seconds with the same Idempotency-Key; nothing else is retried. The
reconciler runs every minute, as its schedule would (compressed). When every lifecycle
has ended, the emulator settles and the reconciler makes its next pass with faults still
on; then faults stop and everything left in AWS is audited.

Printed: lifecycles completed; requests refused correctly (503) and wrongly (a 4xx for a
valid request); 5xx other than 503; duplicate and lost job records (and Slurm jobs);
stuck idempotency records; and orphaned billable resources with their cost per hour.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
logging.getLogger("pcluster").setLevel(logging.CRITICAL)  # its validators log every AWS error they see
sys.path.insert(0, str(ROOT))

MAX_TRIES = 40  # a client gives up on one request after this many 503s
STOPPED = threading.Event()  # the campaign is over (or was stopped): clients give up at once
WAIT_LIMIT = 900  # seconds a lifecycle waits for one state before calling it failed
POLL_SECONDS = 2  # how often a client looks at what it waits for


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # 4xx for valid requests, and other 5xx
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str, status: int, body: Any) -> None:
        code = (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None
        with self.lock:
            self.statuses[f"{status}{' ' + code if code else ''}"] += 1
            if status >= 400 and status != 503 and code != "request_in_progress":
                self.wrong.append(f"{what} -> {status} {code}: {str(body)[:200]}")


class Client:
    def __init__(self, base: str, who: str, tally: Tally):
        self.base, self.who, self.tally = base, who, tally

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        """One request, repeated as Retry-After asks while the answer is 503 (or 409 in progress)."""
        headers = {"X-Lsst-Principal": self.who, "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        data = json.dumps(body).encode() if body is not None else None
        for _ in range(MAX_TRIES):
            if STOPPED.is_set():
                return 599, {"error": {"code": "stopped", "message": "the campaign was stopped"}}
            request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, payload, retry_after = response.status, json.loads(response.read()), None
            except urllib.error.HTTPError as error:
                status, payload = error.code, json.loads(error.read() or b"{}")
                retry_after = error.headers.get("Retry-After")
            except OSError as error:  # the emulator's API dropped the connection: retry
                status, payload, retry_after = 599, {"error": {"code": "connection", "message": str(error)}}, "1"
            self.tally.saw(f"{method} {path}", status, payload)
            code = payload.get("error", {}).get("code") if isinstance(payload, dict) else None
            if status == 503 or code == "request_in_progress" or status == 599:
                time.sleep(float(retry_after or 1))
                continue
            return status, payload
        return status, payload

    def wait(self, path: str, field_name: str, wanted: set[str], stop: set[str]) -> tuple[str, Any]:
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline and not STOPPED.is_set():
            status, payload = self.call("GET", path)
            if status == 200 and payload[field_name] in wanted | stop:
                return payload[field_name], payload
            time.sleep(POLL_SECONDS)
        return "timeout", None


def lifecycle(index: int, base: str, tally: Tally) -> dict[str, Any]:
    user, name = f"u{index:03d}", f"c{index:03d}"
    client = Client(base, user, tally)
    outcome: dict[str, Any] = {"index": index, "cluster": name, "completed": False, "phases": {}}
    started = time.monotonic()

    def phase(label: str) -> None:
        outcome["phases"][label] = round(time.monotonic() - started, 1)

    def fail(step: str, detail: Any) -> dict[str, Any]:
        outcome.update(failed_at=step, detail=str(detail)[:300])
        return outcome

    status, body = client.call("POST", "/users", {"name": user}, key=f"user-{index}")
    if status not in (200, 201):
        return fail("user", (status, body))
    phase("user")
    spec = {
        "name": name,
        "queues": [{"name": "compute", "instance_types": ["c5.large"], "min_nodes": 1, "max_nodes": 2}],
        "stack_tag": "w_2026_47",
        "budget_usd": 25,
    }
    status, body = client.call("POST", "/clusters", spec, key=f"launch-{index}")
    if status != 202:
        return fail("launch", (status, body))
    phase("launch accepted")
    state, cluster = client.wait(f"/clusters/{name}", "state", {"ready"}, {"failed", "deleted"})
    phase("ready")
    if state != "ready":
        fail("ready", (state, (cluster or {}).get("failure")))
    else:
        status, body = client.call(
            "POST", f"/clusters/{name}/jobs", {"command": "echo done > done.txt"}, key=f"job-{index}"
        )
        outcome["job_id"] = body.get("job", {}).get("job_id") if status == 202 else None
        if status != 202:
            fail("job", (status, body))
        else:
            job_state, job = client.wait(
                f"/clusters/{name}/jobs/{outcome['job_id']}", "state", {"completed"}, {"failed", "cancelled"}
            )
            phase("job finished")
            if job_state != "completed":
                fail("job finished", (job_state, (job or {}).get("history", [])[-1:]))
    status, body = client.call("DELETE", f"/clusters/{name}", key=f"delete-{index}")
    if status != 202:
        return fail("delete", (status, body))
    state, cluster = client.wait(f"/clusters/{name}", "state", {"deleted"}, {"failed"})
    phase("deleted")
    if state != "deleted":
        return fail("deleted", (state, (cluster or {}).get("failure")))
    if "failed_at" not in outcome:
        outcome["completed"] = True
    return outcome


def settle(emulator: Any, timeout: float = 600) -> bool:
    """Wait until no execution runs and no command or delivery is under way."""
    import boto3

    from lsstctl.emulator import glue

    sfn = boto3.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = sum(
            len(sfn.list_executions(stateMachineArn=m["stateMachineArn"], statusFilter="RUNNING")["executions"])
            for m in sfn.list_state_machines()["stateMachines"]
        )
        if running == 0 and glue.busy() == 0:
            return True
        time.sleep(1)
    return False


def audit(emulator: Any, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    import boto3

    from lsstctl import wiring
    from lsstctl.domain.models import cluster_id
    from lsstctl.domain.pricing import gb_month_to_hourly

    deps = wiring.deps()
    catalog, region = deps.catalog, emulator.region
    ec2 = boto3.client("ec2")
    left: list[str] = []
    hourly = 0.0
    records = {c.id: c for c in deps.store.list_clusters(None)}  # by their names in AWS
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] in {"running", "pending", "stopping", "stopped"}:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                cluster = tags.get("parallelcluster:cluster-name", "?")
                if instance["State"]["Name"] != "stopped":
                    hourly += catalog.instance_hourly(region, instance["InstanceType"])
                left.append(
                    f"instance {instance['InstanceId']} of {cluster} "
                    f"({records[cluster].state.value if cluster in records else 'no record'})"
                )
    for volume in ec2.describe_volumes()["Volumes"]:
        tags = {t["Key"]: t["Value"] for t in volume.get("Tags", [])}
        if "parallelcluster:cluster-name" in tags:
            hourly += gb_month_to_hourly(catalog.ebs_gb_month(region, volume["VolumeType"]), volume["Size"])
            left.append(f"volume {volume['VolumeId']} of {tags['parallelcluster:cluster-name']}")
    stacks = [
        s["StackName"]
        for s in boto3.client("cloudformation").describe_stacks()["Stacks"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ]
    left += [f"stack {s}" for s in stacks]
    alarms = deps.monitor.list_idle_alarms()
    left += [f"alarm {a}" for a in alarms]
    hourly += len(alarms) * 0.10 / 730  # a standard alarm: $0.10 a month
    not_deleted = sorted(n for n, c in records.items() if c.state.value != "deleted")

    duplicates, lost = [], []
    jobcomp = Path(emulator.workdir) / "slurm" / "jobcomp.log"
    slurm_log = jobcomp.read_text() if jobcomp.exists() else ""
    for outcome in outcomes:
        jobs = deps.store.list_jobs(cluster_id(f"u{outcome['index']:03d}", outcome["cluster"]))
        if len(jobs) > 1:
            duplicates.append(f"{outcome['cluster']}: {len(jobs)} job records")
        if outcome.get("job_id"):
            if not jobs:
                lost.append(f"{outcome['cluster']}: job {outcome['job_id']} accepted, no record")
            slurm_jobs = set(re.findall(rf"JobId=(\d+) [^\n]*{outcome['job_id']}", slurm_log))
            if len(slurm_jobs) > 1:
                duplicates.append(f"{outcome['cluster']}: {len(slurm_jobs)} Slurm jobs for one record")
    idem = boto3.client("dynamodb").scan(TableName=deps.settings.idempotency_table).get("Items", [])
    now_ms = time.time() * 1000
    stuck = [
        i["id"]["S"]
        for i in idem
        if i["status"]["S"] == "INPROGRESS" and float(i.get("in_progress_expiration", {}).get("N", now_ms + 1)) > now_ms
    ]
    expired_in_progress = sum(1 for i in idem if i["status"]["S"] == "INPROGRESS") - len(stuck)
    return {
        "left": left,
        "orphan_usd_per_hour": hourly,
        "not_deleted": not_deleted,
        "duplicates": duplicates,
        "lost": lost,
        "stuck_idempotency": stuck,
        "expired_in_progress": expired_in_progress,
    }


def campaign(mode: str, rate: float, lifecycles: int, concurrency: int, seed: int) -> dict[str, Any]:
    from lsstctl.emulator.faults import FaultInjector
    from lsstctl.emulator.runtime import Emulator

    # The reconciler's grace for fresh records, compressed with its schedule.
    os.environ["LSSTCTL_RECONCILE_GRACE_SECONDS"] = "30"
    os.environ["LSSTCTL_REDRIVE_BASE_SECONDS"] = "30"
    workdir = Path(tempfile.mkdtemp(prefix=f"lsstctl-faults-{mode}-"))
    STOPPED.clear()
    faults = FaultInjector(rate=rate, mode=mode, seed=seed)
    tally = Tally()
    started = time.monotonic()
    emulator = Emulator(workdir, api_port=0, poll_seconds=1, provision_seconds=1, faults=faults)
    emulator.start()
    stop = threading.Event()

    def reconciler_schedule() -> None:
        while not stop.wait(60):
            try:
                emulator.invoke("lsstctl-reconciler")
            except Exception as error:  # the schedule goes on
                print(f"  reconciler invocation failed: {error}", file=sys.stderr)

    threading.Thread(target=reconciler_schedule, daemon=True).start()
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        done = 0
        outcomes = []
        for outcome in pool.map(lambda i: lifecycle(i, emulator.api_url, tally), range(lifecycles)):
            outcomes.append(outcome)
            done += 1
            if done % max(1, lifecycles // 10) == 0:
                print(f"  {mode}: {done}/{lifecycles} lifecycles ({time.monotonic() - started:.0f} s)", flush=True)
        pool.shutdown()
        stop.set()
        last_lifecycle = time.monotonic()
        # Faults stay on: the clean-up path must work on the bad day itself.
        settled = settle(emulator)
        time.sleep(31)  # past the reconciler's grace for records the campaign just left
        pass_at = time.monotonic() - last_lifecycle
        emulator.invoke("lsstctl-reconciler")
        settled = settle(emulator) and settled
        faults.enabled = False  # only now, for the audit's own reads
        injected = faults.summary()
        result = audit(emulator, outcomes)
        result.update(reconciler_pass_at=pass_at)
        result.update(
            settled=settled,
            injected=injected,
            outcomes=outcomes,
            statuses=dict(tally.statuses),
            wrong=tally.wrong,
            seconds=time.monotonic() - started,
            mode=mode,
            rate=rate,
            lifecycles=lifecycles,
            concurrency=concurrency,
            seed=seed,
        )
        return result
    finally:
        # A stop signal lands here too: lifecycles not started are dropped, running ones
        # fail against the stopped API, and the emulator's daemons are stopped.
        STOPPED.set()
        pool.shutdown(wait=False, cancel_futures=True)
        stop.set()
        emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(result: dict[str, Any]) -> str:
    outcomes = result["outcomes"]
    completed = sum(1 for o in outcomes if o["completed"])
    statuses = result["statuses"]
    refused_ok = sum(v for k, v in statuses.items() if k.startswith("503"))
    in_progress = sum(v for k, v in statuses.items() if "request_in_progress" in k)
    wrong_4xx = [w for w in result["wrong"] if " -> 4" in w]
    other_5xx = [w for w in result["wrong"] if " -> 5" in w]
    generic_500 = [w for w in other_5xx if "internal_error" in w]
    failures = Counter(o.get("failed_at") for o in outcomes if not o["completed"])
    phases = ["user", "launch accepted", "ready", "job finished", "deleted"]
    medians = {p: statistics.median([o["phases"][p] for o in outcomes if p in o["phases"]] or [0]) for p in phases}
    lines = [
        f"mode {result['mode']}: {result['rate']:.0%} of the control plane's AWS "
        + (
            "calls fail beyond the SDK's retries"
            if result["mode"] == "outlast"
            else "requests fail before the SDK's retries"
        )
        + f"; {result['lifecycles']} lifecycles, {result['concurrency']} at a time, seed {result['seed']}",
        f"  faults injected                {result['injected']['injected']} of {result['injected']['calls']} "
        f"calls ({', '.join(f'{k} {v}' for k, v in result['injected']['by_service'].items())})",
        f"  lifecycles completed           {completed}/{len(outcomes)} ({completed / max(1, len(outcomes)):.1%})"
        + (f"; ended early at: {dict(failures)}" if failures else ""),
        f"  refused correctly (503)        {refused_ok} answers (retried as Retry-After asks)",
        f"  409 request_in_progress        {in_progress}",
        f"  refused wrongly (4xx)          {len(wrong_4xx)}",
        f"  5xx other than 503             {len(other_5xx)} (generic 500: {len(generic_500)})",
        f"  duplicate records              {len(result['duplicates'])}",
        f"  lost records                   {len(result['lost'])}",
        f"  stuck idempotency records      {len(result['stuck_idempotency'])}",
        f"  orphaned billable resources    {len(result['left'])} (${result['orphan_usd_per_hour']:.4f}/h) after the "
        f"reconciler's pass {result['reconciler_pass_at']:.0f} s after the last lifecycle, faults still on",
        f"  clusters not deleted           {len(result['not_deleted'])}",
        f"  settled after the campaign     {'yes' if result['settled'] else 'NO'}; {result['seconds']:.0f} s in all",
        "  a lifecycle's median timeline  " + ", ".join(f"{p} {medians[p]:.0f} s" for p in phases),
    ]
    for title, items in (
        ("refused wrongly / 5xx", result["wrong"]),
        ("left in AWS", result["left"]),
        ("duplicates", result["duplicates"]),
        ("lost", result["lost"]),
        ("not deleted", result["not_deleted"]),
        ("stuck idempotency", result["stuck_idempotency"]),
        (
            "ended early",
            [f"{o['cluster']} at {o.get('failed_at')}: {o.get('detail')}" for o in outcomes if not o["completed"]],
        ),
    ):
        for item in items[:10]:
            lines.append(f"    {title}: {item}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["outlast", "sdk", "both"], default="both")
    parser.add_argument("--rate", type=float, help="default: 0.10 for outlast, 0.30 for sdk")
    parser.add_argument("--lifecycles", type=int, default=int(os.environ.get("LIFECYCLES", 200)))
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("CONCURRENCY", 8)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", 1)))
    parser.add_argument("--json", help="also write the full results here")
    args = parser.parse_args(argv)
    from lsstctl.emulator.stopping import stop_on_signals

    stop_on_signals()  # SIGTERM and SIGHUP clean up like Ctrl-C: no Slurm daemon left behind
    modes = ["outlast", "sdk"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        rate = args.rate if args.rate is not None else (0.10 if mode == "outlast" else 0.30)
        result = campaign(mode, rate, args.lifecycles, args.concurrency, args.seed)
        print(report(result), flush=True)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    ok = all(
        not r["left"]
        and not r["duplicates"]
        and not r["lost"]
        and not r["stuck_idempotency"]
        and not [w for w in r["wrong"] if " -> 4" in w or "internal_error" in w]
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
