"""`serve` as a user runs it: a process of its own, stopped by the signals people and
machines send, killed outright, started again. Nothing of it is left running after a
stop, a killed run's daemons are stopped by the next start, one serve at a time may use
a work directory, and the state (users, clusters, jobs, ledgers) survives every restart.

Slow (each start brings up moto, Slurm and ParallelCluster's validators): one test runs
the whole story once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lsstctl.emulator.demo import Api
from tests.conftest import ROOT, cluster_spec

STOP_WITHIN = 10  # seconds, from the signal to the last process gone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This test process may run an emulator of its own: none of its settings leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LSSTCTL_", "MOTO_")) and k != "AWS_ENDPOINT_URL"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1]
    except (OSError, IndexError):
        return False
    return not state.startswith("Z")


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            found |= {child} | _descendants(child)
    return found


class Serve:
    def __init__(self, workdir: Path, port: int):
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 120) -> Api:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lsstctl.emulator",
                "serve",
                "--port",
                str(self.port),
                "--poll-seconds",
                "1",
                "--workdir",
                str(self.workdir),
            ],
            cwd=ROOT,
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        api = Api(f"http://127.0.0.1:{self.port}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
            try:
                if api.call("GET", "/clusters")[0] == 200:
                    return api
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("serve did not come up")

    def processes(self) -> set[int]:
        """The serve process, everything it started, and the daemons it recorded."""
        assert self.proc is not None
        record = self.workdir / "slurm" / "run" / "daemons.json"
        daemons = {entry["pid"] for entry in json.loads(record.read_text()).values()} if record.exists() else set()
        return {self.proc.pid} | _descendants(self.proc.pid) | daemons

    def stop(self, sig: signal.Signals) -> tuple[float, set[int], str]:
        """Send `sig`; (seconds until everything was gone, what is left, what it printed)."""
        assert self.proc is not None
        ours = self.processes()
        started = time.monotonic()
        self.proc.send_signal(sig)
        output, _ = self.proc.communicate(timeout=60)
        while time.monotonic() - started < STOP_WITHIN and any(_alive(p) for p in ours):
            time.sleep(0.1)
        return time.monotonic() - started, {p for p in ours if _alive(p)}, output


def _state(api: Api) -> dict[str, Any]:
    """What a user sees: their user, cluster and jobs (the fields that must survive)."""
    user = api.expect(200, "GET", "/users/alice")
    cluster = api.expect(200, "GET", "/clusters/kept")
    jobs = api.expect(200, "GET", "/clusters/kept/jobs")["jobs"]
    return {
        "user": (user["iam_user_arn"], user["secret_arn"]),
        "cluster": (
            cluster["state"],
            cluster["generation"],
            cluster["head_node_instance_id"],
            [t["state"] for t in cluster["history"]],
        ),
        "jobs": sorted((j["job_id"], j["state"], j["slurm_job_id"]) for j in jobs),
        "ledger": api.expect(200, "GET", "/clusters/kept/cost")["generation"],
    }


def test_serve_stops_cleanly_on_every_signal_keeps_its_state_and_recovers_from_a_kill(tmp_path):
    serve = Serve(tmp_path / "serve", _free_port())

    # Given a serve with a user, a ready cluster and a finished job
    api = serve.start()
    api.expect(201, "POST", "/users", {"name": "alice"})
    api.expect(202, "POST", "/clusters", cluster_spec("kept", budget_usd=50))
    api.wait_for("/clusters/kept", "state", {"ready"}, {"failed", "deleted"}, timeout=90)
    job = api.expect(202, "POST", "/clusters/kept/jobs", {"command": "echo kept > kept.txt"})["job"]
    api.wait_for(f"/clusters/kept/jobs/{job['job_id']}", "state", {"completed"}, {"failed", "cancelled"})
    before = _state(api)

    # A second serve on the same work directory says so in one line and touches nothing
    snapshot = serve.workdir / "aws-state.pickle"
    stamp = snapshot.stat().st_mtime if snapshot.exists() else None
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "lsstctl.emulator",
            "serve",
            "--port",
            str(_free_port()),
            "--workdir",
            str(serve.workdir),
        ],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "already running" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert (snapshot.stat().st_mtime if snapshot.exists() else None) == stamp

    # When it is stopped with SIGTERM, everything it started stops within 10 s
    took, left, output = serve.stop(signal.SIGTERM)
    assert serve.proc.returncode == 0 and left == set() and took < STOP_WITHIN, output

    # Then started again, it answers the same
    api = serve.start()
    assert _state(api) == before

    # When it is killed outright, its daemons are left running...
    daemons = serve.processes() - {serve.proc.pid}
    serve.proc.kill()
    serve.proc.communicate(timeout=30)
    assert any(_alive(p) for p in daemons)
    # ...and the next start stops them before anything else, and answers the same
    api = serve.start()
    assert not any(_alive(p) for p in daemons)
    assert _state(api) == before
    took, left, output = serve.stop(signal.SIGINT)
    assert serve.proc.returncode == 0 and left == set() and took < STOP_WITHIN, output


def test_every_stop_signal_runs_the_same_shutdown(monkeypatch):
    """SIGHUP (a closed terminal, systemd's reload-or-stop) stops serve like SIGTERM and
    SIGINT: one handler for all three, raising a stop no `except Exception` swallows."""
    from lsstctl.emulator import stopping as serve_main

    assert set(serve_main.STOP_SIGNALS) == {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    assert not issubclass(serve_main.Stop, Exception)
    monkeypatch.setattr(serve_main, "_stopping", [])
    try:
        serve_main.raise_stop(signal.SIGHUP, None)
        raise AssertionError("no stop raised")
    except serve_main.Stop as stop:
        assert str(stop) == "SIGHUP"
    serve_main.raise_stop(signal.SIGTERM, None)  # a second signal while stopping: ignored
