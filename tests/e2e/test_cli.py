"""The `lsstctl` command, as installed (the virtualenv's entry point), against the local control
plane that `make serve` runs: the HTTP API, the real workflows, real Slurm. No mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

LSSTCTL = Path(sys.executable).parent / "lsstctl"
OWNER = "cleo"  # no other test acts as cleo: her cost listing is hers alone
NAME = "cli-demo"


class Ran:
    def __init__(self, done: subprocess.CompletedProcess[str]):
        self.code, self.out, self.err = done.returncode, done.stdout, done.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@pytest.fixture
def cli_env(emulator, tmp_path):
    return {
        **os.environ,
        "LSSTCTL_ENDPOINT": emulator.api_url,
        "LSSTCTL_PRINCIPAL": OWNER,
        "LSSTCTL_POLL_SECONDS": "0.3",
        "LSSTCTL_CONFIG": str(tmp_path / "config.toml"),  # never the user's own
    }


@pytest.fixture
def lsstctl(cli_env):
    env = cli_env

    def run(*args: str, timeout: float = 300, **overrides: str | None) -> Ran:
        environment = {k: v for k, v in {**env, **overrides}.items() if v is not None}
        return Ran(
            subprocess.run(
                [str(LSSTCTL), *args], capture_output=True, text=True, env=environment, timeout=timeout, check=False
            )
        )

    return run


def test_a_researchers_session_end_to_end(emulator, lsstctl, tmp_path):
    # Given a user, and a quote for the cluster she wants
    created = lsstctl("users", "create", OWNER, "--json")
    assert created.code == 0, created
    assert created.json()["iam_user_name"] == f"lsst-{OWNER}"
    quoted = lsstctl("quote", "small", "2", "--nodes", "1", "--budget", "20", "--json")
    assert quoted.code == 0, quoted
    assert quoted.json()["budget"]["admitted"] and quoted.json()["run_usd"] < 20
    spec = tmp_path / "mine.yaml"
    spec.write_text("queues:\n  - {name: q, instance_types: [c5.4xlarge], max_nodes: 8}\nbudget_usd: 30\n")
    mine = lsstctl("quote", "--spec", str(spec), "2", "--json")
    assert mine.code == 0 and mine.json()["max_nodes"] == 8 and mine.json()["budget"]["budget_usd"] == 30, mine
    assert "your spec" in lsstctl("quote", "--spec", str(spec), "2").out

    # When she launches and waits, then it is ready, and the wait showed each step
    up = lsstctl("up", NAME, "--budget", "20", "--stack", "w_2026_47", "--idle", "120", "--wait", "--json")
    assert up.code == 0, up
    assert up.json()["state"] == "ready"
    assert "creating the cluster" in up.err and "installing the LSST stack" in up.err, up

    # When she runs a command and waits for it, then it completed and its log holds its output
    ran = lsstctl("run", NAME, "--wait", "--json", "--", "echo hello-$((6*7)); echo on $(hostname)")
    assert ran.code == 0, ran
    job = ran.json()
    assert job["state"] == "completed" and job["slurm_job_id"]
    log = lsstctl("logs", NAME, job["job_id"], "--json")
    assert log.code == 0 and "hello-42" in log.json()["lines"], log
    followed = lsstctl("logs", NAME, job["job_id"], "--follow")
    assert followed.code == 0 and "hello-42" in followed.out.splitlines(), followed
    listed = lsstctl("jobs", NAME, "--json")
    assert [j["job_id"] for j in listed.json()["jobs"]] == [job["job_id"]]
    assert job["job_id"] in lsstctl("jobs", NAME).out

    # When a job fails, then `run --wait` says so with its exit code for failures
    failing = lsstctl("run", NAME, "--wait", "--", "exit 3")
    assert failing.code == 7 and "failed (exit 3:0)" in failing.out, failing

    # When she cancels a job she did not wait for, then it ends cancelled
    sleeper = lsstctl("run", NAME, "--job-name", "sleeper", "--", "sleep", "600")
    assert sleeper.code == 0 and "submitted" in sleeper.out, sleeper
    sleeper_id = sleeper.out.split()[1]
    cancelled = lsstctl("cancel", NAME, sleeper_id)
    assert cancelled.code == 0 and sleeper_id in cancelled.out, cancelled
    deadline = time.monotonic() + 60
    while (state := _job(lsstctl, NAME, sleeper_id)["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)

    # When the guard has measured it, then the cost is drawn in the terminal and as a PNG
    emulator.tick()
    plot = lsstctl("cost", NAME, "--plot")
    assert plot.code == 0, plot
    assert "budget $20.00" in plot.out and "spend (USD)" in plot.out and "since" in plot.out
    png = tmp_path / "cost.png"
    drawn = lsstctl("cost", NAME, "--png", str(png), "--json")
    assert drawn.code == 0 and drawn.json()["points"], drawn
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    mine = lsstctl("cost", "--json").json()
    assert [r["cluster"] for r in mine["clusters"]] == [NAME] and mine["total_spend_usd"] > 0
    assert lsstctl("cost").out.count(NAME) == 1

    # When she tears it down and waits, then it is deleted with its results archived
    down = lsstctl("down", NAME, "--wait", "--json")
    assert down.code == 0, down
    assert down.json()["state"] == "deleted" and down.json()["archive_uri"].startswith("s3://")
    assert "archiving results" in down.err


def _job(lsstctl, cluster: str, job_id: str) -> dict[str, Any]:
    return next(j for j in lsstctl("jobs", cluster, "--json").json()["jobs"] if j["job_id"] == job_id)


def test_failures_have_exit_codes_and_one_readable_line(lsstctl):
    # A launch the budget cannot cover is refused: exit 4, the API's code and field in one line
    refused = lsstctl("up", "cli-poor", "--budget", "0.001")
    assert refused.code == 4, refused
    assert refused.err.strip().startswith("error: validation_error (400): budget_usd")
    assert len(refused.err.strip().splitlines()) == 1 and "Traceback" not in refused.err
    # An unknown cluster is exit 3; with --json the API's error body is on stdout
    unknown = lsstctl("--json", "status", "no-such-cluster")
    assert unknown.code == 3 and unknown.json()["error"]["code"] == "not_found", unknown
    assert lsstctl("jobs", "no-such-cluster").code == 3
    # A bad quote names the field
    bad = lsstctl("quote", "huge", "8", "--json")
    assert bad.code == 4 and bad.json()["error"]["field"] == "preset", bad
    # Usage errors are exit 2: no endpoint anywhere, a missing budget
    nowhere = lsstctl("status", LSSTCTL_ENDPOINT=None)
    assert nowhere.code == 2 and "no API endpoint" in nowhere.err, nowhere
    assert lsstctl("up", "cli-x").code == 2
    # The API unreachable is exit 6
    closed = lsstctl("status", LSSTCTL_ENDPOINT="http://127.0.0.1:9", timeout=120)
    assert closed.code == 6 and "cannot reach the API" in closed.err, closed


def test_ctrl_c_stops_watching_and_the_launch_goes_on(lsstctl, cli_env):
    import signal

    assert lsstctl("users", "create", OWNER).code == 0
    watching = subprocess.Popen(
        [str(LSSTCTL), "up", "cli-watch", "--budget", "20", "--stack", "w_2026_47", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    )
    # When the user presses Ctrl-C while the launch is shown in progress
    first = watching.stderr.readline()
    # (the launch may have moved on by the first poll: any state before ready)
    assert "cli-watch" in first and any(s in first for s in ("requested", "launching", "installing")), first
    watching.send_signal(signal.SIGINT)
    _, rest = watching.communicate(timeout=60)
    # Then the command stops with 130 and says how to look again; the launch is not cancelled
    assert watching.returncode == 130, rest
    assert "stopped watching; cli-watch goes on" in rest and "Traceback" not in rest
    deadline = time.monotonic() + 120
    while (state := lsstctl("status", "cli-watch", "--json").json()["state"]) != "ready":
        assert state in {"requested", "launching", "installing"} and time.monotonic() < deadline, state
        time.sleep(0.5)
    # Without --wait, `down` answers at once and the teardown goes on
    down = lsstctl("down", "cli-watch")
    assert down.code == 0 and "tearing cli-watch down" in down.out, down
    deadline = time.monotonic() + 120
    while lsstctl("status", "cli-watch", "--json").json()["state"] != "deleted":
        assert time.monotonic() < deadline
        time.sleep(0.5)
