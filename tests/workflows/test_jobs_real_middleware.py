"""Jobs as astronomers run them, through the HTTP API, on the emulator's real Slurm with Rubin's
real middleware (pipetask, bps through ctrl_bps_parsl, the Butler) installed by `make deps`.

One cluster for the module. Its first job runs past its one-minute walltime while the others
run (the emulator's Slurm has four CPUs), and the last test finds it ended `timeout`: the
minute is waited once, beside the rest. Memory: the local Slurm cannot enforce a job's memory
(no cgroups here; jobacct_gather's OverMemoryKill did not end an over-limit job when tried), so
`out_of_memory` is covered by the mapping of Slurm's state (tests/unit/test_scripts.py), not
here. Multi-node: one local node; the directives are tested in rendering (test_scripts.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from lsstctl.emulator.demo import ENDED, Api
from tests.conftest import cluster_spec

DEMO_PIPETASK = {
    "butler": "/shared/demo/repo",
    "pipeline": "/shared/demo/pipeline.yaml",
    "inputs": ["demo/inputs"],
    "extra_args": ["--register-dataset-types"],
}
# c5.4xlarge: 16 vCPUs, 32 GiB per node (as EC2 describes it; the fit checks use that).
QUEUE = {"name": "compute", "instance_types": ["c5.4xlarge"], "min_nodes": 1, "max_nodes": 2}


@pytest.fixture(scope="module")
def cluster(emulator) -> Any:
    api = Api(emulator.api_url)
    name = f"mw-{uuid.uuid4().hex[:6]}"
    api.expect(202, "POST", "/clusters", cluster_spec(name, queues=[QUEUE], max_lifetime_hours=2, budget_usd=50))
    api.wait_for(f"/clusters/{name}", "state", {"ready"}, {"deleted", "failed"}, timeout=120)
    overrun = submit(api, name, {"name": "overrun", "command": "echo started; sleep 600", "walltime_minutes": 1})
    yield api, name, overrun
    api.call("DELETE", f"/clusters/{name}")


def submit(api: Api, name: str, job: dict[str, Any]) -> dict[str, Any]:
    return api.expect(202, "POST", f"/clusters/{name}/jobs", job)["job"]


def wait_job(api: Api, name: str, job_id: str, states: set[str] = ENDED, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.expect(200, "GET", f"/clusters/{name}/jobs/{job_id}")
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout}s: {job}"
        time.sleep(0.5)


def test_a_real_pipetask_run_on_the_demo_butler_completes_with_its_quanta_counted(cluster):
    api, name, _ = cluster
    job = submit(api, name, {"name": "add", "pipetask": {**DEMO_PIPETASK, "output": "u/alice/add"}})
    done = wait_job(api, name, job["job_id"])
    assert done["state"] == "completed", done
    assert done["exit_code"] == "0:0"
    assert done["quanta"] == {"expected": 3, "succeeded": 3, "failed": 0, "blocked": 0}
    assert done["started_at"] and done["ended_at"] and done["node_count"] == 1 and done["cpus"] == 1
    log = api.expect(200, "GET", f"/clusters/{name}/jobs/{job['job_id']}/log?tail=5")
    assert log["source"] == "head node" and any("quanta:" in line for line in log["lines"]), log
    assert log["archive_uri"].endswith(f"/{name}/g1/{job['job_id']}/")


def test_a_real_bps_submit_through_ctrl_bps_parsls_slurm_site_runs_every_quantum(cluster):
    api, name, _ = cluster
    bps = {
        **{k: v for k, v in DEMO_PIPETASK.items() if k != "extra_args"},
        "output": "u/alice/bps",
        "pilot_walltime_minutes": 10,
    }
    job = submit(api, name, {"name": "campaign", "walltime_minutes": 15, "bps": bps})
    done = wait_job(api, name, job["job_id"], timeout=300)
    assert done["state"] == "completed", done
    assert done["quanta"] == {"expected": 3, "succeeded": 3, "failed": 0, "blocked": 0}
    assert "quanta: 3 succeeded, 0 failed, 0 blocked, 0 remaining" in done["reason"]


def test_a_pipeline_whose_inputs_are_missing_fails_with_the_middlewares_own_error(cluster):
    api, name, _ = cluster
    job = submit(
        api,
        name,
        {"name": "nothing", "pipetask": {**DEMO_PIPETASK, "inputs": ["no/such/collection"], "output": "u/alice/none"}},
    )
    done = wait_job(api, name, job["job_id"])
    assert done["state"] == "failed" and done["exit_code"] != "0:0", done
    lines = api.expect(200, "GET", f"/clusters/{name}/jobs/{job['job_id']}/log?tail=50")["lines"]
    assert any("no/such/collection" in line for line in lines), lines


def test_a_non_zero_exit_is_failed_with_its_code_and_its_log(cluster):
    api, name, _ = cluster
    job = submit(api, name, {"name": "oops", "command": "echo 'about to fail' >&2; exit 3"})
    done = wait_job(api, name, job["job_id"])
    assert (done["state"], done["exit_code"]) == ("failed", "3:0"), done
    assert "NonZeroExitCode" in done["reason"]
    assert api.expect(200, "GET", f"/clusters/{name}/jobs/{job['job_id']}/log")["lines"][-1] == "about to fail"


def test_cancel_while_pending_and_while_running_ends_cancelled_and_is_idempotent(cluster):
    api, name, _ = cluster
    # A job asking for all four of the local Slurm's CPUs, then one more: it waits in the queue.
    blocker = submit(api, name, {"name": "blocker", "command": "sleep 300", "cores": 4, "walltime_minutes": 5})
    waiting = submit(api, name, {"name": "waiting", "command": "touch ran; sleep 300", "walltime_minutes": 5})
    assert wait_job(api, name, waiting["job_id"], {"pending"})["state"] == "pending"
    first = api.call("DELETE", f"/clusters/{name}/jobs/{waiting['job_id']}")
    assert first[0] == 202 and first[1]["status_url"].endswith(waiting["job_id"]), first
    assert wait_job(api, name, waiting["job_id"])["state"] == "cancelled"
    again = api.call("DELETE", f"/clusters/{name}/jobs/{waiting['job_id']}")
    assert again[0] == 200 and again[1]["job"]["state"] == "cancelled"

    running = wait_job(api, name, blocker["job_id"], {"running"} | ENDED, timeout=120)
    assert running["state"] == "running", running
    assert api.call("DELETE", f"/clusters/{name}/jobs/{blocker['job_id']}")[0] == 202
    ended = wait_job(api, name, blocker["job_id"])
    assert ended["state"] == "cancelled" and ended["started_at"] and ended["ended_at"], ended


def test_impossible_requests_are_refused_naming_the_field(cluster):
    api, name, _ = cluster
    for job, field in [
        ({"command": "true", "nodes": 3}, "nodes"),
        ({"command": "true", "cores": 17}, "cores"),
        ({"command": "true", "memory_mb": 40_000}, "memory_mb"),
        ({"command": "true", "walltime_minutes": 3 * 60}, "walltime_minutes"),
        ({"command": "true", "queue": "gpu"}, "queue"),
    ]:
        status, body = api.call("POST", f"/clusters/{name}/jobs", job)
        assert (status, body["error"]["field"]) == (400, field), (job, body)
    status, body = api.call(
        "POST", f"/clusters/{name}/jobs", {"pipetask": DEMO_PIPETASK | {"output": "o"}, "array": "0-3"}
    )
    assert status == 400 and "array" in body["error"]["message"], body


def test_job_costs_and_the_idle_share_add_up_to_the_ledger(cluster, emulator):
    api, name, _ = cluster
    emulator.invoke("lsstctl-guard")  # a measurement now
    listed = api.expect(200, "GET", f"/clusters/{name}/jobs")
    cost, jobs = listed["cost"], listed["jobs"]
    ran = [j for j in jobs if j["started_at"] and j["started_at"] != j["ended_at"]]
    assert ran and all(j["cost_usd"] > 0 for j in ran), jobs
    # Cancelled while it waited: it never ran, it cost nothing.
    assert next(j for j in jobs if j["spec"]["name"] == "waiting")["cost_usd"] == 0
    assert cost["spend_usd"] > 0 and cost["idle_usd"] > 0
    assert sum(j["cost_usd"] for j in jobs if j["cost_usd"]) == pytest.approx(cost["jobs_usd"], abs=1e-5)
    assert cost["jobs_usd"] + cost["idle_usd"] == pytest.approx(cost["spend_usd"], abs=1e-5)
    ledger = api.expect(200, "GET", f"/clusters/{name}/cost")
    assert (ledger["jobs_usd"], ledger["idle_usd"], ledger["spend_usd"]) == pytest.approx(
        (cost["jobs_usd"], cost["idle_usd"], cost["spend_usd"])
    )
    # The blocker asked for 4 of a c5.4xlarge's 16 vCPUs: a quarter of its node's price per hour.
    blocker = next(j for j in jobs if j["spec"]["name"] == "blocker")
    hours = (_epoch(blocker["ended_at"]) - _epoch(blocker["started_at"])) / 3600
    node = next(r["hourly_usd"] for r in ledger["breakdown"] if r["role"] == "compute")
    assert blocker["cost_usd"] == pytest.approx(node * hours * 4 / 16, rel=1e-3)


def test_a_job_past_its_walltime_ends_timeout(cluster):
    api, name, overrun = cluster
    done = wait_job(api, name, overrun["job_id"], timeout=150)
    assert done["state"] == "timeout" and "TIMEOUT" in done["reason"], done


def _epoch(text: str) -> float:
    from lsstctl.domain.models import from_iso

    return from_iso(text).timestamp()
