"""`make bench-load`: many clusters launched and deleted at once against `serve`.

`--owners` users each launch `--clusters` small clusters, all requests in parallel; the bench
times until every cluster is ready, then deletes them all in parallel and times until every
one is deleted. It prints the times, the EventBridge deliveries the emulator failed (its
"EventBridge delivery to ... failed" lines: a scheduled guard or reconciler that could not be
invoked, an event not delivered), and anything left billing afterwards (instances not
terminated, volumes not deleted, under ParallelCluster's cluster-name tag).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.perf import Served  # noqa: E402
from lsstctl.emulator.demo import Api  # noqa: E402

SPEC = {
    "head_node_type": "t3.medium",
    "queues": [{"name": "compute", "instance_types": ["c5.large"], "min_nodes": 0, "max_nodes": 2}],
    "shared_storage": {"type": "ebs", "mount_dir": "/shared", "size_gib": 50},
    "stack_tag": "w_2026_47",
    "budget_usd": 20,
    "idle_minutes": 600,
    "max_lifetime_hours": 8,
}


def _in_parallel(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as error:  # reported, not raised: the others go on
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _refusals(answers: list[Any]) -> list[str]:
    """What each request that was not accepted got: its status and error, or its exception."""
    out = []
    for answer in answers:
        if isinstance(answer, Exception):
            out.append(f"{type(answer).__name__}: {answer}")
        elif answer[0] != 202:
            error = (answer[1] or {}).get("error") or {}
            out.append(f"{answer[0]} {error.get('code', '')}: {error.get('message', answer[1])}"[:200])
    return out


def _states(apis: dict[str, Api]) -> Counter[str]:
    found: Counter[str] = Counter()
    for api in apis.values():
        for cluster in api.expect(200, "GET", "/clusters")["clusters"]:
            found[cluster["state"]] += 1
    return found


def _wait(apis: dict[str, Api], wanted: str, total: int, timeout: float) -> tuple[float | None, Counter[str]]:
    began = time.monotonic()
    while True:
        states = _states(apis)
        if states[wanted] == total:
            return time.monotonic() - began, states
        if time.monotonic() - began > timeout:
            return None, states
        time.sleep(2)


def _left_billing(endpoint: str) -> list[str]:
    import boto3

    ec2 = boto3.client(
        "ec2", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local"
    )
    tagged = [{"Name": "tag-key", "Values": ["parallelcluster:cluster-name"]}]
    left = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=tagged)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    return left + [v["VolumeId"] for v in ec2.describe_volumes(Filters=tagged)["Volumes"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--owners", type=int, default=5)
    parser.add_argument("--clusters", type=int, default=10, help="each owner's")
    parser.add_argument("--timeout", type=float, default=900, help="seconds each phase may take")
    args = parser.parse_args(argv)
    total = args.owners * args.clusters
    with tempfile.TemporaryDirectory() as tmp, Served(Path(tmp) / "serve") as served:
        apis = {f"owner{o}": Api(served.base, who=f"owner{o}") for o in range(args.owners)}
        for owner, api in apis.items():
            api.expect(201, "POST", "/users", {"name": owner})
        names = [(owner, f"load{i:02d}") for owner in apis for i in range(args.clusters)]
        began = time.monotonic()
        answers = _in_parallel(
            [lambda o=o, n=n: apis[o].call("POST", "/clusters", {**SPEC, "name": n}) for o, n in names]
        )
        launched = sum(1 for a in answers if not isinstance(a, Exception) and a[0] == 202)
        refused = _refusals(answers)
        answered = time.monotonic() - began
        ready, at_ready = _wait(apis, "ready", launched, args.timeout)
        began = time.monotonic()
        answers = _in_parallel([lambda o=o, n=n: apis[o].call("DELETE", f"/clusters/{n}") for o, n in names])
        deleting = sum(1 for a in answers if not isinstance(a, Exception) and a[0] == 202)
        refused_deletes = _refusals(answers)
        deleted, at_deleted = _wait(apis, "deleted", launched, args.timeout)
        failed = [line for line in served.output if "EventBridge delivery to" in line and "failed" in line]
        left = _left_billing(served.endpoint)
    print(f"{args.owners} owners x {args.clusters} clusters = {total}, every request in parallel")
    print(f"launch requests accepted: {launched} of {total} (all answered in {answered:.1f} s)")
    print(
        f"all ready: {f'{ready:.0f} s' if ready is not None else 'NOT within ' + str(args.timeout) + ' s'} {dict(at_ready)}"
    )
    print(f"delete requests accepted: {deleting} of {total}")
    print(
        f"all deleted: {f'{deleted:.0f} s' if deleted is not None else 'NOT within ' + str(args.timeout) + ' s'} "
        f"{dict(at_deleted)}"
    )
    for what, errors in (("launch", refused), ("delete", refused_deletes)):
        for error, count in Counter(errors).most_common(3):
            print(f"{what} requests refused: {count} x {error}")
    print(f"failed deliveries: {len(failed)}")
    print(f"left billing: {len(left)} {left[:5] if left else ''}")
    ok = launched == deleting == total and ready is not None and deleted is not None and not failed and not left
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
