"""`make bench-perf`: what the control plane's cold starts and the guard's pass cost.

Cold starts: each Lambda handler's module and the API's app are imported in a fresh
interpreter, as a Lambda cold start does, `--runs` times each, interleaved with bare
`import boto3` in the same run; the figure is each median import time and its ratio to
boto3's (target: at most 1.25). The environment is a deployed function's: tracing as the
template's default leaves it (POWERTOOLS_TRACE_DISABLED=true), pydantic's plugin lookup off.

The guard's pass: N ready clusters made directly in moto (in process: records, a head node
each, an hour of queue-depth data), then the guard's real code, twice (the first pass
creates the ledgers); the second pass's wall time and its AWS calls (counted by the fault
layer, none failed) at each size (`--clusters 10,100,1000`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HANDLERS = {
    "guard": "lambdas.guard",
    "idle alarm": "lambdas.idle_alarm",
    "budget alarm": "lambdas.budget_alarm",
    "reconciler": "lambdas.reconciler",
    "launch steps": "lambdas.launch_steps",
    "teardown steps": "lambdas.teardown_steps",
    "job steps": "lambdas.job_steps",
    "chatops": "lambdas.chatops",
    "engine": "lambdas.engine",
    "API (app)": "app",
}
TARGET = 1.25
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$")


def lambda_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LSSTCTL_", "POWERTOOLS_", "AWS_ENDPOINT"))}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "lsstctl-bench",  # as in a Lambda: tracing decided by the setting
            "POWERTOOLS_TRACE_DISABLED": "true",  # the template's default (TraceHandlers=false)
            "PYDANTIC_DISABLE_PLUGINS": "__all__",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": f"{ROOT}:{ROOT / 'chalice_app'}",
            "PYTHONDONTWRITEBYTECODE": "",
        }
    )
    return env


def import_seconds(module: str, env: dict[str, str]) -> float:
    """One cold import of `module` (cumulative, from -X importtime), in seconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    for line in done.stderr.splitlines():
        match = _LINE.search(line)
        if match and match.group(2) == module:
            return int(match.group(1)) / 1e6
    raise RuntimeError(f"no import time for {module}: {done.stderr[-500:]}")


def cold_starts(runs: int) -> bool:
    env = lambda_env()
    for module in ("boto3", *HANDLERS.values()):  # compile once: Lambda's zip carries .pyc files
        import_seconds(module, env)
    times: dict[str, list[float]] = {name: [] for name in ("boto3", *HANDLERS)}
    for _ in range(runs):
        times["boto3"].append(import_seconds("boto3", env))
        for name, module in HANDLERS.items():
            times[name].append(import_seconds(module, env))
    floor = statistics.median(times["boto3"])
    print(f"cold imports, median of {runs} fresh interpreters each (bare `import boto3`: {1000 * floor:.0f} ms)")
    print(f"{'handler':<16} {'import':>8} {'x boto3':>8}")
    ok = True
    for name in HANDLERS:
        median = statistics.median(times[name])
        ratio = median / floor
        ok = ok and ratio <= TARGET
        print(f"{name:<16} {1000 * median:>6.0f} ms {ratio:>7.2f}x{'' if ratio <= TARGET else '  over'}")
    print(f"target: every handler at most {TARGET}x `import boto3` -> {'met' if ok else 'NOT met'}")
    return ok


def guard_pass(clusters: int) -> tuple[float, int, dict[str, int]]:
    """(seconds, AWS calls, calls by operation) of the guard's second pass over `clusters`."""
    import time
    from collections import Counter
    from datetime import timedelta

    import boto3
    from moto import mock_aws

    from lsstctl import wiring
    from lsstctl.domain.models import Cluster, ClusterSpec, ClusterState, Transition, iso
    from lsstctl.emulator.bootstrap import bootstrap
    from lsstctl.emulator.faults import FaultInjector
    from lsstctl.services.costs import guard_tick

    os.environ.update({"AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "ERROR"})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        env = bootstrap(boto3.Session(region_name="us-east-1"), "us-east-1")
        os.environ.update(env)
        wiring.reset()
        deps = wiring.deps()
        ec2 = boto3.client("ec2")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        now = deps.clock()
        ready_at = now - timedelta(hours=1)
        spec = ClusterSpec.model_validate(
            {
                "name": "perf",
                "queues": [{"name": "compute", "instance_types": ["c5.large"], "min_nodes": 0, "max_nodes": 4}],
                "stack_tag": "w_2026_47",
                "budget_usd": 1000,
            }
        )
        for i in range(clusters):
            owner = f"owner{i % 50}"
            record = Cluster(
                name=f"perf{i:05d}",
                owner=owner,
                spec=spec.model_copy(update={"name": f"perf{i:05d}"}),
                state=ClusterState.READY,
                created_at=iso(ready_at - timedelta(minutes=10)),
                updated_at=iso(ready_at),
                history=[Transition(state=ClusterState.READY.value, at=iso(ready_at), reason="perf")],
            )
            head = ec2.run_instances(
                ImageId=image,
                InstanceType="t3.medium",
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": "parallelcluster:cluster-name", "Value": record.id},
                            {"Key": "parallelcluster:node-type", "Value": "HeadNode"},
                            {"Key": "lsstctl:owner", "Value": owner},
                        ],
                    }
                ],
            )["Instances"][0]["InstanceId"]
            deps.store.create_cluster(record.model_copy(update={"head_node_instance_id": head}))
            deps.monitor.publish_queue_depth(record.id, 2, now - timedelta(minutes=5))  # busy
        guard_tick(deps)  # the first pass makes the ledgers
        by_operation: Counter[str] = Counter()

        def count(call: Any) -> bool:  # counts every call, fails none
            by_operation[f"{call.service}.{call.operation}"] += 1
            return False

        with FaultInjector(plan=count) as counted:
            deps = wiring.deps()  # clients built now carry the counting hooks
            started = time.perf_counter()
            summary = guard_tick(deps)
            seconds = time.perf_counter() - started
        assert summary["clusters"] == clusters and not summary["teardowns"], summary
        return seconds, counted.calls, dict(by_operation)


def guard_scaling(sizes: list[int], interval_seconds: float = 60) -> bool:
    print("\nthe guard's pass (moto in process; the second pass, after the ledgers exist)")
    print(f"{'clusters':>9} {'wall':>9} {'AWS calls':>10} {'calls/cluster':>14}")
    results = {}
    for n in sizes:
        seconds, calls, operations = guard_pass(n)
        results[n] = (seconds, calls)
        top = ", ".join(f"{op} {k}" for op, k in sorted(operations.items(), key=lambda x: -x[1])[:4])
        print(f"{n:>9} {seconds:>8.2f}s {calls:>10} {calls / n:>14.1f}  {top}")
    small, large = min(results), max(results)
    time_ratio = results[large][0] / results[small][0]
    call_ratio = results[large][1] / results[small][1]
    ok = time_ratio <= 3 and call_ratio <= 3 and results[large][0] <= interval_seconds
    print(
        f"{large} clusters against {small}: {time_ratio:.0f}x the wall time, {call_ratio:.0f}x the AWS calls "
        f"(target: at most 3x each, and inside one {interval_seconds:.0f} s interval) -> {'met' if ok else 'NOT met'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--clusters", default="10,100,1000", help="guard pass sizes, comma separated")
    args = parser.parse_args(argv)
    ok = cold_starts(args.runs)
    sys.path.insert(0, str(ROOT))
    ok = guard_scaling([int(n) for n in args.clusters.split(",") if n]) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
