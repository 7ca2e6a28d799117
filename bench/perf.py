"""`make bench-perf`: what the control plane's cold starts, the guard's pass, the API under
load and the control plane itself cost.

Cold starts: each Lambda handler's module and the API's app are imported in a fresh
interpreter, as a Lambda cold start does, `--runs` times each, interleaved with bare
`import boto3` in the same run; the figure is each median import time and its ratio to
boto3's (target: at most 1.25). The environment is a deployed function's: tracing as the
template's default leaves it (POWERTOOLS_TRACE_DISABLED=true), pydantic's plugin lookup off.
Then the API's first request (GET /clusters, in a fresh interpreter, against moto's server)
against bare boto3's first call (import, a client, one GetItem).

The guard's pass: N ready clusters made directly in moto (in process: records, a head node
each, an hour of queue-depth data), then the guard's real code, twice (the first pass
creates the ledgers); the second pass's wall time, the guard's own time (less moto's answers)
and its AWS calls (counted by the fault layer, none failed) at each size (`--clusters`). Over
1,000 clusters the pass sends shares to the guard's function: here they are kept, then run one
after another and timed each (on Lambda they run side by side).

The API: `serve` in a process of its own, the demo cluster launched, `--clients` threads each
asking the common read routes `--rounds` times; p50 and p99 per route. The demo cluster is
then deleted and its state machines' executions read back (transitions, Lambda tasks).

The control plane's bill: the counted calls and measured times at us-east-1 list prices,
idle (a month), per cluster-hour and per lifecycle, against the demo cluster's 8 hours.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


# A first request in a fresh interpreter, as a cold Lambda serves it: the API's app imported
# and GET /clusters answered (the caller resolved through the state table, its clusters read),
# against bare boto3's first call (import, a client, one GetItem) in the same account.
FIRST_REQUEST = """
import json, sys, time
started = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - started, "status": status}}))
"""
API_FIRST = """
import app
event = {
    "resource": "/clusters", "path": "/clusters", "httpMethod": "GET", "headers": {"Accept": "application/json"},
    "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
    "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
    "requestContext": {"resourcePath": "/clusters", "httpMethod": "GET", "requestId": "bench",
                       "identity": {"userArn": "arn:aws:iam::123456789012:user/lsstctl/alice"}},
}
class Context:
    function_name = "lsstctl-api"; memory_limit_in_mb = 1024; aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:lsstctl-api"
status = app.app(event, Context())["statusCode"]
"""
BOTO3_FIRST = """
import boto3, os
item = boto3.client("dynamodb").get_item(TableName=os.environ.get("LSSTCTL_STATE_TABLE", "lsstctl-state"), Key={"pk": {"S": "none"}, "sk": {"S": "none"}})
status = 200
"""


def first_requests(runs: int) -> bool:
    """The API's first request against bare boto3's first call (moto's server answers both)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from lsstctl.emulator.bootstrap import bootstrap

    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = lambda_env()
        env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
        session = boto3.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        try:
            env.update(bootstrap(session, "us-east-1"))
        finally:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        env.pop("LSSTCTL_TRUST_PRINCIPAL_HEADER", None)
        # The caller: an admin (looked up in the registry all the same), so GET /clusters answers 200.
        env["LSSTCTL_ADMIN_PRINCIPALS"] = "arn:aws:iam::123456789012:user/lsstctl/alice"

        def once(body: str) -> float:
            done = subprocess.run(
                [sys.executable, "-c", FIRST_REQUEST.format(body=body)],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"a first request failed: {done.stderr[-2000:]}")
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            assert answer["status"] == 200, (answer, done.stderr[-2000:])
            return float(answer["seconds"])

        once(API_FIRST)  # compiled once (a Lambda zip carries .pyc files)
        api, floor = [], []
        for _ in range(runs):
            floor.append(once(BOTO3_FIRST))
            api.append(once(API_FIRST))
    finally:
        server.stop()
    ratio = statistics.median(api) / statistics.median(floor)
    print(
        f"first request, median of {runs}: the API's GET /clusters {1000 * statistics.median(api):.0f} ms (import, "
        f"caller resolved, clusters read) against bare boto3's first GetItem {1000 * statistics.median(floor):.0f} ms "
        f"(import, client, call): {ratio:.2f}x -> {'met' if ratio <= TARGET else 'NOT met'}"
    )
    return ratio <= TARGET


@dataclass
class Invocation:
    seconds: float
    calls: int
    aws_seconds: float  # of `seconds`, inside AWS calls (moto here)

    @property
    def own_seconds(self) -> float:
        return self.seconds - self.aws_seconds


@dataclass
class GuardPass:
    coordinator: Invocation  # the invocation the schedule started
    shares: list[Invocation]  # those it sent (concurrent on Lambda; each timed on its own here)
    by_operation: dict[str, int]

    @property
    def wall(self) -> float:
        """The pass's length with its shares running concurrently, as Lambda runs them: at most
        the coordinator's time plus the slowest share's (they start while it meters its own)."""
        return self.coordinator.seconds + max((s.seconds for s in self.shares), default=0.0)

    @property
    def own(self) -> float:
        """The same, counting only the guard's own time (not the time moto took to answer)."""
        return self.coordinator.own_seconds + max((s.own_seconds for s in self.shares), default=0.0)

    @property
    def own_total(self) -> float:
        """The guard's own time over all its invocations (what Lambda bills, less AWS's part)."""
        return self.coordinator.own_seconds + sum(s.own_seconds for s in self.shares)

    @property
    def calls(self) -> int:
        return self.coordinator.calls + sum(s.calls for s in self.shares)

    @property
    def critical_calls(self) -> int:
        return self.coordinator.calls + max((s.calls for s in self.shares), default=0)


class RecordedShares:
    """The guard's function as the bench plays it: shares kept, then each run and timed."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def dispatch(self, share: dict[str, Any]) -> None:
        self.sent.append(share)


def guard_pass(clusters: int) -> GuardPass:
    """The guard's second pass over `clusters` ready clusters (the first makes the ledgers)."""
    from collections import Counter
    from datetime import timedelta

    import boto3
    from moto import mock_aws

    from lsstctl import wiring
    from lsstctl.domain.models import Cluster, ClusterSpec, ClusterState, Transition, iso
    from lsstctl.emulator import glue
    from lsstctl.emulator.bootstrap import bootstrap
    from lsstctl.emulator.faults import FaultInjector
    from lsstctl.services.costs import guard_tick

    os.environ.update({"AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "ERROR"})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    # The emulator's own speed-ups: moto's tag lookup and its instance lookup are quadratic, its
    # GetMetricData compares every query with every datapoint, and it walks every DynamoDB
    # value it answers through botocore's shape.
    glue.install_ec2_tag_index()
    glue.install_ec2_instance_lookup()
    glue.install_cloudwatch_metric_index()
    glue.install_dynamodb_value_passthrough()
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

        def one_pass(counted: Counter[str] | None = None) -> GuardPass:
            shares = RecordedShares()

            def timed(run: Any) -> tuple[Invocation, dict[str, Any]]:
                calls: Counter[str] = Counter()

                def count(call: Any) -> bool:  # counts every call, fails none
                    calls[f"{call.service}.{call.operation}"] += 1
                    return False

                with FaultInjector(plan=count), _time_in_aws() as in_aws:
                    wiring.reset()  # an invocation's own clients, which carry the counting hooks
                    deps = wiring.deps()
                    deps.guard_shards = shares
                    started = time.perf_counter()
                    summary = run(deps)
                    seconds = time.perf_counter() - started
                if counted is not None:
                    counted.update(calls)
                return Invocation(seconds, sum(calls.values()), in_aws[0]), summary

            coordinator, summary = timed(guard_tick)
            assert not summary["teardowns"] and not summary.get("errors"), summary
            ran = [timed(lambda deps, share=share: guard_tick(deps, shard=share)) for share in list(shares.sent)]
            assert all(not s.get("teardowns") and not s.get("errors") for _, s in ran), ran
            metered = summary["clusters"] + sum(s.get("clusters", 0) for _, s in ran)
            assert metered == clusters, (metered, clusters)  # each once, none skipped
            return GuardPass(coordinator, [i for i, _ in ran], dict(counted or {}))

        one_pass()  # the first pass makes the ledgers
        # The emulated account (moto's millions of objects) lives in this process only because it
        # is emulated; a guard's Lambda holds none of it, so the collector is not let pause on it.
        gc.collect()
        gc.freeze()
        try:
            by_operation: Counter[str] = Counter()
            return one_pass(by_operation)
        finally:
            gc.unfreeze()


@contextmanager
def _time_in_aws() -> Iterator[list[float]]:
    """Seconds spent inside AWS calls (here: moto answering) while it is open."""
    from botocore.client import BaseClient

    spent = [0.0]
    original = BaseClient._make_api_call

    def timed(self: Any, operation: str, params: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, operation, params)
        finally:
            spent[0] += time.perf_counter() - started

    BaseClient._make_api_call = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def guard_scaling(sizes: list[int], interval_seconds: float = 60) -> tuple[bool, dict[int, GuardPass]]:
    print("\nthe guard's pass (moto in process with the emulator's speed-ups; the second pass, ledgers made)")
    print("shares run one after another here, each timed: a pass's wall is its first invocation plus its slowest share")
    print("(own: the guard's code alone, without the time moto took to answer its calls)")
    head = ("clusters", "wall", "own", "first", "shares", "slowest", "calls", "/cluster")
    print("{:>9} {:>8} {:>7} {:>8} {:>7} {:>8} {:>6} {:>9}  most made".format(*head))
    results = {}
    for n in sizes:
        found = results[n] = guard_pass(n)
        slowest = max((s.seconds for s in found.shares), default=0.0)
        top = ", ".join(f"{op} {k}" for op, k in sorted(found.by_operation.items(), key=lambda x: -x[1])[:4])
        print(
            f"{n:>9} {found.wall:>7.2f}s {found.own:>6.2f}s {found.coordinator.seconds:>7.2f}s {len(found.shares):>7} "
            f"{slowest:>7.2f}s {found.calls:>6} {found.calls / n:>9.3f}  {top}"
        )
    small = min(results)
    ok = True
    for large in sorted(results):
        if large == small:
            continue
        a, b = results[small], results[large]
        time_ratio, own_ratio, call_ratio = b.wall / a.wall, b.own / a.own, b.calls / a.calls
        critical = b.critical_calls / a.critical_calls
        # At 1000 clusters: at most 3x the small pass; beyond, inside one interval (others: shown).
        judged = large >= 1000
        met = b.wall <= interval_seconds and (large > 1000 or (time_ratio <= 3 and call_ratio <= 3))
        ok = ok and (met or not judged)
        verdict = ""
        if judged and large == 1000:  # each of the two ratios, then both
            verdict = (
                f" -> calls {'met' if call_ratio <= 3 else 'NOT met'}, wall {'met' if time_ratio <= 3 else 'NOT met'}"
            )
        elif judged:
            verdict = f" -> {'met' if met else 'NOT met'}"
        print(
            f"{large} clusters against {small}: {time_ratio:.1f}x the wall time ({own_ratio:.1f}x the guard's own), "
            f"{call_ratio:.1f}x the AWS calls ({critical:.1f}x on the longest invocation path); inside one "
            f"{interval_seconds:.0f} s interval: {'yes' if b.wall <= interval_seconds else 'NO'}{verdict}"
        )
    return ok, results


# --- the API under 20 clients, and what a lifecycle costs the control plane ------------------
ROUTES = [
    ("GET", "/clusters"),
    ("GET", "/clusters/{name}"),
    ("GET", "/clusters/{name}/cost"),
    ("GET", "/clusters/{name}/cost/history"),
    ("GET", "/clusters/{name}/jobs"),
    ("GET", "/costs"),
    ("GET", "/presets"),
    ("GET", "/quote?preset=small&hours=8"),
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Served:
    """`make serve` in a process of its own (a fresh work directory), stopped with SIGTERM."""

    def __init__(self, workdir: Path):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.output: list[str] = []
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LSSTCTL_", "MOTO_", "AWS_ENDPOINT"))}
        command = [sys.executable, "-m", "lsstctl.emulator", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--poll-seconds", "1", "--workdir", str(self.workdir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # its first lines say where it listens
            self.output.append(line)
            if "(AWS emulator on " in line:
                self.endpoint = line.split("(AWS emulator on ", 1)[1].split(")", 1)[0]
                break
        else:
            raise RuntimeError("serve ended before it started")
        import threading

        def keep() -> None:  # what it prints, for whoever reads it (bench/load.py counts failures)
            for line in self.proc.stdout if self.proc and self.proc.stdout else []:
                self.output.append(line)

        threading.Thread(target=keep, daemon=True).start()
        from lsstctl.emulator.demo import Api

        deadline = time.monotonic() + 180
        while True:  # its API answers once its Slurm, moto and validators are up
            try:
                if Api(self.base).call("GET", "/clusters")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not answer within 180 s")
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def api_and_lifecycle(clients: int, rounds: int) -> dict[str, Any]:
    """The API's latency per route with `clients` concurrent clients against `serve`, then the
    demo cluster deleted; the state machines' transitions and Lambda tasks of its lifecycle."""
    import tempfile
    import threading

    import boto3

    from lsstctl.emulator.demo import CLUSTER, OWNER, Api

    name = CLUSTER["name"]
    with tempfile.TemporaryDirectory() as tmp, Served(Path(tmp) / "serve") as served:
        api = Api(served.base)
        api.expect(201, "POST", "/users", {"name": OWNER})
        api.expect(202, "POST", "/clusters", CLUSTER)
        api.wait_for(f"/clusters/{name}", "state", {"ready"}, {"failed", "deleted"}, timeout=300)
        latencies: dict[str, list[float]] = {path: [] for _, path in ROUTES}
        failures: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            mine = Api(api.base)
            for _ in range(rounds):
                for method, path in ROUTES:
                    started = time.perf_counter()
                    status, _body = mine.call(method, path.format(name=name))
                    took = time.perf_counter() - started
                    with lock:
                        latencies[path].append(took)
                        if status != 200:
                            failures.append(f"{method} {path}: {status}")

        threads = [threading.Thread(target=client) for _ in range(clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        api.expect(202, "DELETE", f"/clusters/{name}")
        api.wait_for(f"/clusters/{name}", "state", {"deleted"}, {"failed"}, timeout=300)
        sfn = boto3.client(
            "stepfunctions",
            endpoint_url=served.endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        transitions, tasks, task_seconds = 0, 0, 0.0
        for machine in sfn.list_state_machines()["stateMachines"]:
            for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]:
                events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
                transitions += sum(1 for e in events if e["type"].endswith("StateEntered"))
                entered = None
                for event in events:  # a Lambda task's time: from its state entered to exited
                    if event["type"] == "TaskStateEntered":
                        entered = event["timestamp"]
                    elif event["type"] == "TaskStateExited" and entered is not None:
                        tasks += 1
                        task_seconds += (event["timestamp"] - entered).total_seconds()
                        entered = None
    every = [t for values in latencies.values() for t in values]
    return {
        "clients": clients,
        "requests": len(every),
        "failures": failures,
        "per_second": len(every) / wall,
        "routes": {path: (_percentile(v, 0.5), _percentile(v, 0.99)) for path, v in latencies.items()},
        "all": (_percentile(every, 0.5), _percentile(every, 0.99)),
        "transitions": transitions,
        "tasks": tasks,
        "task_seconds": task_seconds,
    }


def api_report(found: dict[str, Any]) -> None:
    print(f"\nthe API against `serve`: {found['clients']} concurrent clients, {found['requests']} requests")
    print(f"{'route':<34} {'p50':>8} {'p99':>8}")
    for path, (p50, p99) in found["routes"].items():
        print(f"GET {path:<30} {1000 * p50:>6.0f} ms {1000 * p99:>6.0f} ms")
    p50, p99 = found["all"]
    print(f"{'all':<34} {1000 * p50:>6.0f} ms {1000 * p99:>6.0f} ms  ({found['per_second']:.0f} requests/s)")
    print(f"failed requests: {len(found['failures'])}{' ' + str(found['failures'][:3]) if found['failures'] else ''}")


# us-east-1 list prices (USD; December 2026, no free tier).
LAMBDA_GB_SECOND = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1e6
SFN_TRANSITION = 0.025 / 1000
DDB_READ_UNIT = 0.125 / 1e6  # on demand
DDB_WRITE_UNIT = 0.625 / 1e6
CW_METRIC_MONTH = 0.30  # a custom metric, prorated by the hour it is sent in
CW_ALARM_MONTH = 0.10
CW_METRICS_READ = 0.01 / 1000  # GetMetricData, per metric asked for
CW_PUT_REQUEST = 0.01 / 1000  # PutMetricData
LOGS_GB = 0.50
SECRET_MONTH = 0.40
HOURS_PER_MONTH = 730
MINUTES_PER_MONTH = 43_800
AWS_CALL_SECONDS = 0.02  # an in-region AWS API call's answer, added to the code's own time
LOG_BYTES_PER_INVOCATION = 1200  # START/END/REPORT lines and the pass's one summary line
# A ParallelCluster launch, an install from the stack cache and a teardown (its archive and
# the deletion) on AWS, in minutes; each polled at the product's pace (a Wait, a Task and a
# Choice each time: lsstctl.domain.lifecycle.next_poll_seconds).
AWS_WORKFLOW_MINUTES = {"launch": 15, "install": 5, "archive": 2, "delete": 8}
LEDGER_KB = 16  # a ledger with its history, up to 16 KB
RECORD_KB = 4  # a cluster's record
# A live ledger's write: the table and the three indexes it is on (by_owner, by_kind,
# by_billing; all project every attribute), 1 KB a write unit each.
LEDGER_WRITE_UNITS = 4 * LEDGER_KB


def _memory_gb(function: str) -> float:
    """A function's memory in the template, read as the template tests read it (cfn-lint)."""
    from cfnlint.decode import decode

    template, _matches = decode(str(ROOT / "infra" / "control-plane.yaml"))
    assert template is not None
    return int(template["Resources"][function]["Properties"]["MemorySize"]) / 1024


def _polls(minutes: float, settings: Any, most: int | None = None) -> tuple[int, float]:
    """How many polls a wait of `minutes` costs at the product's pace, and how late the last
    one sees its end (seconds, at most)."""
    from lsstctl.domain.lifecycle import next_poll_seconds

    at, polls, wait = 0.0, 0, 0
    while at < minutes * 60:
        wait = next_poll_seconds(at, settings.poll_seconds, most or settings.poll_max_seconds)
        at, polls = at + wait, polls + 1
    return polls, float(wait)


def _invocation_usd(own_seconds: float, calls: int, memory_gb: float, reads: int = 0, writes: int = 0) -> float:
    seconds = own_seconds + calls * AWS_CALL_SECONDS
    return (
        LAMBDA_REQUEST
        + seconds * memory_gb * LAMBDA_GB_SECOND
        + reads * DDB_READ_UNIT
        + writes * DDB_WRITE_UNIT
        + LOG_BYTES_PER_INVOCATION / 1e9 * LOGS_GB
    )


def idle_reconciler() -> Invocation:
    """One reconciler pass with nothing to reconcile (moto in process, calls counted)."""
    import boto3
    from moto import mock_aws

    from lsstctl import wiring
    from lsstctl.emulator.bootstrap import bootstrap
    from lsstctl.emulator.faults import FaultInjector
    from lsstctl.services.reconciler import reconcile

    with mock_aws():
        os.environ.update(bootstrap(boto3.Session(region_name="us-east-1"), "us-east-1"))
        wiring.reset()
        reconcile(wiring.deps())  # the first: clients made, catalogs loaded
        calls = [0]

        def count(call: Any) -> bool:
            calls[0] += 1
            return False

        with FaultInjector(plan=count), _time_in_aws() as in_aws:
            wiring.reset()
            deps = wiring.deps()
            started = time.perf_counter()
            reconcile(deps)
            seconds = time.perf_counter() - started
        return Invocation(seconds, calls[0], in_aws[0])


def control_plane_cost(passes: dict[int, GuardPass], lifecycle: dict[str, Any] | None) -> bool:
    """The control plane's own bill, from the calls it was counted making (see the prices above)."""
    from lsstctl.domain.presets import at_rest_hourly
    from lsstctl.domain.pricing import load_catalog
    from lsstctl.emulator.demo import CLUSTER
    from lsstctl.settings import Settings

    guard_gb, reconciler_gb, steps_gb = _memory_gb("GuardFunction"), _memory_gb("ReconcilerFunction"), 0.5
    settings = Settings()
    reconcile_runs = MINUTES_PER_MONTH * 60 / settings.reconcile_interval_seconds
    idle_guard = guard_pass(0).coordinator
    reconciler = idle_reconciler()
    lines = {
        "guard (every minute)": MINUTES_PER_MONTH
        * 60
        / settings.guard_interval_seconds
        * _invocation_usd(idle_guard.own_seconds, idle_guard.calls, guard_gb, reads=idle_guard.calls),
        "reconciler (every 5 minutes)": reconcile_runs
        * _invocation_usd(reconciler.own_seconds, reconciler.calls, reconciler_gb, reads=reconciler.calls),
        "Slack signing secret": SECRET_MONTH,
        "operator alarms (2)": 2 * CW_ALARM_MONTH,
    }
    idle = sum(lines.values())
    print("\nthe control plane's own cost (us-east-1 list prices; AWS calls answered in 20 ms each)")
    print(f"idle, a month: guard pass {idle_guard.calls} calls, reconciler pass {reconciler.calls} calls")
    for what, usd in lines.items():
        print(f"  {what:<32} ${usd:7.4f}")
    print(f"  {'total':<32} ${idle:7.4f}  (target: below $1 -> {'met' if idle < 1 else 'NOT met'})")

    # A cluster-hour: the guard's extra time and calls per cluster (between the smallest and
    # the largest pass measured), its reads, the idle check's metric, the head node's metric
    # and its idle alarm.
    small, large = min(passes), max(passes)
    a, b = passes[small], passes[large]
    per_pass_own = (b.own_total - a.own_total) / (large - small)
    per_pass_calls = (b.calls - a.calls) / (large - small)
    per_hour = {
        "guard: its code and calls": 60
        * (per_pass_own + per_pass_calls * AWS_CALL_SECONDS)
        * guard_gb
        * LAMBDA_GB_SECOND,
        # Read with the index's pages (eventually consistent: half a unit per 4 KB, summed over
        # the page); a share of a pass over more than 1000 reads them 100 to a BatchGetItem
        # (strongly consistent, a unit per 4 KB of each item): 10 units, not 2.5.
        "guard: record and ledger reads": 60 * (RECORD_KB + LEDGER_KB) / 4 * 0.5 * DDB_READ_UNIT,
        # A busy cluster is asked about once an idle period (services.costs.idle_not_before),
        # and its ledger written with the answer.
        "guard: the idle check's metric": 60 / CLUSTER["idle_minutes"] * CW_METRICS_READ,
        "guard: the answer kept": 60 / CLUSTER["idle_minutes"] * LEDGER_WRITE_UNITS * DDB_WRITE_UNIT,
        "head node: queue depth sent": 60 * CW_PUT_REQUEST,
        "head node: its metric": CW_METRIC_MONTH / HOURS_PER_MONTH,
        "its idle alarm": CW_ALARM_MONTH / HOURS_PER_MONTH,
    }
    hourly = sum(per_hour.values())
    print(f"a cluster-hour (from {small} to {large} clusters: {per_pass_calls:.3f} calls a pass per cluster)")
    for what, usd in per_hour.items():
        print(f"  {what:<32} ${usd:11.8f}")
    print(f"  {'total':<32} ${hourly:11.8f}")
    ok = idle < 1
    if lifecycle is not None:
        paced = {phase: _polls(minutes, settings) for phase, minutes in AWS_WORKFLOW_MINUTES.items()}
        polls = sum(n for n, _ in paced.values())
        every = sum(AWS_WORKFLOW_MINUTES.values()) * 60 / settings.poll_seconds
        mean_task = lifecycle["task_seconds"] / max(1, lifecycle["tasks"])
        once = (lifecycle["transitions"] + 3 * polls) * SFN_TRANSITION + (lifecycle["tasks"] + polls) * (
            LAMBDA_REQUEST + mean_task * steps_gb * LAMBDA_GB_SECOND
        )
        catalog = load_catalog()
        storage = CLUSTER["shared_storage"]
        rest = at_rest_hourly(catalog, "us-east-1", CLUSTER["head_node_type"], storage["type"], storage["size_gib"])
        queue = CLUSTER["queues"][0]
        node = catalog.instance_hourly("us-east-1", queue["instance_types"][0])
        hours = CLUSTER["max_lifetime_hours"]
        overhead = once + hours * hourly
        print(
            f"a lifecycle (launch, install, teardown): {lifecycle['transitions']} transitions and {lifecycle['tasks']} "
            f"Lambda tasks counted here, plus {polls} polls at AWS's pace ({sum(AWS_WORKFLOW_MINUTES.values())} "
            f"minutes, every {settings.poll_seconds} s slowing to {settings.poll_max_seconds} s; {every:.0f} at a "
            f"steady {settings.poll_seconds} s) -> ${once:.4f}"
        )
        print(
            "  polls a phase: "
            + ", ".join(f"{phase} {n} (its end seen at most {late:.0f} s late)" for phase, (n, late) in paced.items())
        )
        per_poll = 3 * SFN_TRANSITION + LAMBDA_REQUEST + mean_task * steps_gb * LAMBDA_GB_SECOND
        job_polls = {h: _polls(60 * h, settings, most=settings.job_poll_max_seconds)[0] for h in (1, hours)}
        print(
            f"a job tracked for an hour: {job_polls[1]} polls (every {settings.poll_seconds} s slowing to "
            f"{settings.job_poll_max_seconds} s) -> ${job_polls[1] * per_poll:.4f}; for {hours} h: "
            f"{job_polls[hours]} polls -> ${job_polls[hours] * per_poll:.4f}"
        )
        for nodes in (queue["min_nodes"], queue["max_nodes"]):
            spend = hours * (rest + nodes * node)
            share = 100 * overhead / spend
            with_job = 100 * (overhead + job_polls[hours] * per_poll) / spend
            ok = ok and (nodes != queue["min_nodes"] or share < 1)
            print(
                f"the demo cluster for {hours} h with {nodes} compute node(s): ${spend:.2f}; the control plane's "
                f"part ${overhead:.4f} = {share:.2f}% (target: below 1%); with one job tracked all along "
                f"{with_job:.2f}%"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--clusters", default="10,100,1000", help="guard pass sizes, comma separated")
    parser.add_argument("--clients", type=int, default=20, help="concurrent API clients")
    parser.add_argument("--rounds", type=int, default=10, help="each client's passes over the routes")
    parser.add_argument("--parts", default="imports,guard,api", help="which of imports, guard, api (and cost) to run")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    sys.path.insert(0, str(ROOT))
    ok = True
    if "imports" in parts:
        imports = cold_starts(args.runs)
        ok = first_requests(args.runs) and imports and ok
    passes: dict[int, GuardPass] = {}
    if "guard" in parts:
        scaled, passes = guard_scaling([int(n) for n in args.clusters.split(",") if n])
        ok = scaled and ok
    if "api" in parts:
        found = api_and_lifecycle(args.clients, args.rounds)
        api_report(found)
        ok = not found["failures"] and ok
        if passes:
            ok = control_plane_cost(passes, found) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
