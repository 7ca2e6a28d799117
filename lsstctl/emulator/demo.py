"""The demo: the whole lifecycle through the HTTP API, each step timed and checked.

user -> cluster (launch, stack install) -> a real Slurm job -> teardown with archive,
then checks that the results are in S3 and that no instance of the cluster still runs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

from lsstctl.emulator.runtime import PRINCIPAL_HEADER, Emulator

OWNER = "alice"
CLUSTER = {
    "name": "rubin-demo",
    "head_node_type": "t3.medium",
    "queues": [{"name": "compute", "instance_types": ["c5.xlarge"], "min_nodes": 1, "max_nodes": 4}],
    "shared_storage": {"type": "ebs", "mount_dir": "/shared", "size_gib": 200},
    "stack_tag": "w_2026_47",
    "budget_usd": 25,
    "idle_minutes": 30,
    "max_lifetime_hours": 8,
}
# A real `pipetask run` (Rubin's middleware, from PyPI locally) of pipe_base's three-task test
# pipeline on the demo Butler repository every cluster's install makes on its shared storage.
JOB = {
    "name": "add",
    "pipetask": {
        "butler": "/shared/demo/repo",
        "pipeline": "/shared/demo/pipeline.yaml",
        "inputs": ["demo/inputs"],
        "output": "u/alice/demo",
        "extra_args": ["--register-dataset-types"],
    },
    "cores": 1,
    "walltime_minutes": 10,
}
# What the pipeline wrote, as the Butler lists it (a command job; its log read through the API).
QUERY = {
    "name": "outputs",
    "command": 'butler query-datasets "$LSST_SHARED_DIR/demo/repo" "*" --collections u/alice/demo',
    "walltime_minutes": 5,
}


ENDED = {"completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory"}


class StepFailed(Exception):
    pass


@dataclass
class Api:
    base: str
    who: str = OWNER

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        headers = {PRINCIPAL_HEADER: self.who, "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def expect(self, status: int, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        got, payload = self.call(method, path, body, key)
        if got != status:
            raise StepFailed(f"{method} {path} -> {got}, expected {status}: {payload}")
        return payload

    def wait_for(self, path: str, field: str, wanted: set[str], stop: set[str], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            payload = self.expect(200, "GET", path)
            if payload[field] in wanted:
                return payload
            if payload[field] in stop or time.monotonic() > deadline:
                raise StepFailed(
                    f"{path}: {field}={payload[field]} ({payload.get('failure') or payload.get('reason')})"
                )
            time.sleep(0.25)


def run_demo(emulator: Emulator, out: Callable[[str], None] = print) -> bool:
    api = Api(emulator.api_url)
    session = boto3.Session(region_name=emulator.region)
    results: list[bool] = []

    def step(title: str, action: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            detail = action()
            ok = True
        except Exception as error:  # report the failed step and go on to teardown
            detail, ok = f"{type(error).__name__}: {error}", False
        results.append(ok)
        out(f"{'ok  ' if ok else 'FAIL'} {title:<44} {time.monotonic() - started:6.2f}s  {detail}")

    def create_user() -> str:
        user = api.expect(201, "POST", "/users", {"name": OWNER}, key="demo-user")
        return f"IAM user {user['iam_user_name']}, key in {user['secret_arn'].split(':')[-1]}"

    def launch() -> str:
        accepted = api.expect(202, "POST", "/clusters", CLUSTER, key="demo-launch")
        return f"202, status at {accepted['status_url']}"

    def wait_ready() -> str:
        cluster = api.wait_for(f"/clusters/{CLUSTER['name']}", "state", {"ready"}, {"deleted", "failed"})
        return " -> ".join(t["state"] for t in cluster["history"]) + f" (head node {cluster['head_node_instance_id']})"

    job_path: dict[str, str] = {}

    def submit() -> str:
        accepted = api.expect(202, "POST", f"/clusters/{CLUSTER['name']}/jobs", JOB, key="demo-job")
        job_path["path"] = accepted["status_url"]
        return f"job {accepted['job']['job_id']}"

    def wait_job() -> str:
        job = api.wait_for(job_path["path"], "state", {"completed"}, ENDED - {"completed"})
        q = job["quanta"] or {}
        return (
            f"Slurm job {job['slurm_job_id']} {job['state']} (exit {job['exit_code']}), quanta: "
            f"{q.get('succeeded')} of {q.get('expected')} succeeded, outputs in {job['output_dir']}"
        )

    listing: list[str] = []

    def butler_outputs() -> str:
        accepted = api.expect(202, "POST", f"/clusters/{CLUSTER['name']}/jobs", QUERY, key="demo-query")
        api.wait_for(accepted["status_url"], "state", {"completed"}, ENDED - {"completed"})
        log = api.expect(200, "GET", f"{accepted['status_url']}/log?tail=300")
        # The Butler's table rows of the run (one small table per dataset type; headers left out).
        rows = [" ".join(line.split()) for line in log["lines"] if f" {JOB['pipetask']['output']}/" in line]
        listing.extend(row for row in rows if row.startswith("add"))
        types = sorted({row.split()[0] for row in rows})
        if not types:
            raise StepFailed(f"no dataset of the run in the Butler: {log['lines'][-5:]}")
        return f"{len(types)} dataset types in u/alice/demo: {', '.join(types)}"

    def job_cost() -> str:
        emulator.invoke("lsstctl-guard")  # a measurement now (the guard runs every minute)
        listed = api.expect(200, "GET", f"/clusters/{CLUSTER['name']}/jobs")
        job = next(j for j in listed["jobs"] if j["spec"]["name"] == JOB["name"])
        cost = listed["cost"]
        return (
            f"job {JOB['name']} ${job['cost_usd']:.6f} ({job['spend_share_percent']}% of the spend); "
            f"all jobs ${cost['jobs_usd']:.6f} + idle ${cost['idle_usd']:.6f} = ${cost['spend_usd']:.6f}"
        )

    def teardown() -> str:
        api.expect(202, "DELETE", f"/clusters/{CLUSTER['name']}", key="demo-delete")
        cluster = api.wait_for(f"/clusters/{CLUSTER['name']}", "state", {"deleted"}, {"failed"})
        spent = cluster["teardown"]["final_spend_usd"]
        return (
            f"reason {cluster['teardown_reason']}, final spend ${spent:.4f} of ${CLUSTER['budget_usd']}, "
            f"archived to {cluster['archive_uri']}"
        )

    def check_archive() -> str:
        bucket, _, prefix = api.expect(200, "GET", f"/clusters/{CLUSTER['name']}")["archive_uri"][5:].partition("/")
        keys = [
            o["Key"] for o in session.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        ]
        if not any(k.endswith(".out") for k in keys):
            raise StepFailed(f"no job log among archived objects {keys}")
        return f"{len(keys)} objects, e.g. {sorted(keys)[-1]}"

    def check_nothing_billing() -> str:
        cluster_id = api.expect(200, "GET", f"/clusters/{CLUSTER['name']}")["id"]  # its name in AWS
        reservations = session.client("ec2").describe_instances(
            Filters=[
                {"Name": "tag:parallelcluster:cluster-name", "Values": [cluster_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )["Reservations"]
        live = [i["InstanceId"] for r in reservations for i in r["Instances"]]
        if live:
            raise StepFailed(f"instances still live: {live}")
        return "no instance of the cluster is left"

    out(f"lsstctl demo on the local emulator (API {emulator.api_url})")
    started = time.monotonic()
    step("create-user (least privilege, key in Secrets Manager)", create_user)
    step("launch-cluster (validated by ParallelCluster)", launch)
    step("wait: cluster created, LSST stack installed", wait_ready)
    step("run-job: a real pipetask run (sbatch through SSM)", submit)
    step("wait: job finished", wait_job)
    step("the Butler lists what it wrote (job log via API)", butler_outputs)
    for line in listing:
        out(f"       {line}")
    step("what the job cost, what was idle", job_cost)
    step("auto-delete (stop fleet, archive, delete)", teardown)
    step("results archived in S3", check_archive)
    step("nothing left billing", check_nothing_billing)
    passed = all(results)
    out(
        f"{'demo passed' if passed else 'demo FAILED'}: {sum(results)}/{len(results)} steps in {time.monotonic() - started:.1f}s"
    )
    return passed
