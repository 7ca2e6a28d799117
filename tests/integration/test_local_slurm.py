"""Integration tests for the emulator's real single-node Slurm and the lsstinstall stand-in.

These start genuine slurmctld/slurmd/munged daemons (installed by
scripts/install-system-packages.sh, which CI runs), so they need root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsstctl.emulator.slurm import LocalSlurm

REPO = Path(__file__).resolve().parents[2]
LSSTINSTALL = REPO / "lsstctl" / "emulator" / "standin" / "lsstinstall"

needs_slurm = pytest.mark.skipif(
    not LocalSlurm.available() or os.geteuid() != 0,
    reason="needs root and Slurm/munge binaries (run scripts/install-system-packages.sh)",
)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    instance = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2)
    started = time.monotonic()
    instance.start(timeout=30)
    print(f"LocalSlurm idle after {time.monotonic() - started:.2f}s")
    try:
        yield instance
    finally:
        pids = instance.pids
        instance.stop()
    assert not instance.running
    assert pids and not [pid for pid in pids.values() if _alive(pid)], pids


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=15)


def _wait_job_state(job_id: str, env: dict[str, str], want: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = _run(["scontrol", "show", "job", "-o", job_id], env).stdout
        m = re.search(r"\bJobState=(\S+)", line)
        if m and m.group(1) == want:
            return line
        if m and m.group(1) in {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}:
            pytest.fail(f"job {job_id} ended {m.group(1)}: {line}")
        time.sleep(0.2)
    pytest.fail(f"job {job_id} not {want} within {timeout}s; last: {line!r}")


@needs_slurm
def test_env_points_at_generated_conf(slurm: LocalSlurm) -> None:
    conf = Path(slurm.env()["SLURM_CONF"])
    text = conf.read_text()
    assert conf.parent == slurm.workdir
    assert f"SlurmctldPort={slurm.ctld_port}" in text
    assert "MinJobAge=3600" in text
    assert "PartitionName=compute" in text
    state = _run(["sinfo", "-h", "-o", "%P %T %c"], slurm.env()).stdout.split()
    assert state == ["compute*", "idle", "2"]


@needs_slurm
def test_batch_job_runs_to_completion(slurm: LocalSlurm, tmp_path: Path) -> None:
    started = time.monotonic()
    sub = _run(["sbatch", "--parsable", "-J", "hello", "--wrap", "echo hello"], slurm.env(), cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    assert job_id.isdigit()

    line = _wait_job_state(job_id, slurm.env(), "COMPLETED")
    print(f"job {job_id} COMPLETED {time.monotonic() - started:.2f}s after sbatch")
    assert "ExitCode=0:0" in line
    assert "Partition=compute" in line
    assert (tmp_path / f"slurm-{job_id}.out").read_text() == "hello\n"
    # jobcomp/filetxt records the final state too (what sacct would otherwise give).
    assert f"JobId={job_id} " in (slurm.workdir / "jobcomp.log").read_text()


@needs_slurm
def test_second_instance_coexists_and_stop_cleans_up(slurm: LocalSlurm, tmp_path: Path) -> None:
    # Dynamic ports keep a second instance apart from the module one.
    with LocalSlurm(tmp_path / "second", cpus=1, memory_mb=500) as other:
        assert {other.ctld_port, other.slurmd_port}.isdisjoint({slurm.ctld_port, slurm.slurmd_port})
        pids = other.pids
        assert {"slurmctld", "slurmd"} <= set(pids)
        assert "munged" not in pids  # reuses the running munged, so must not stop it
        assert other.running
        assert _run(["sinfo", "-h", "-o", "%T"], other.env()).stdout.strip() == "idle"
        # A job still running at stop() is cancelled, not left behind.
        sub = _run(["sbatch", "--parsable", "--wrap", "sleep 313"], other.env(), cwd=tmp_path)
        assert sub.returncode == 0, sub.stderr
        _wait_job_state(sub.stdout.strip(), other.env(), "RUNNING")
        # RUNNING is reported before slurmstepd has spawned the step: wait for the process.
        assert _eventually(lambda: _sleepers("313"), timeout=30)
    assert not other.running
    assert not [pid for pid in pids.values() if _alive(pid)], pids
    assert not _sleepers("313")
    other.stop()  # idempotent
    assert slurm.running


def _eventually(condition, timeout: float):
    """The condition's first truthy value within the deadline (a slow machine is not a failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _sleepers(arg: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == f"sleep\0{arg}\0".encode():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    """True unless the process is gone (stop() waits, so it is reaped, not a zombie)."""
    return Path(f"/proc/{pid}").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_lsstinstall_standin(tmp_path: Path) -> None:
    tag = "w_2026_01"
    stack = tmp_path / "stack-root"
    stack.mkdir()
    shutil.copy(LSSTINSTALL, stack / "lsstinstall")
    inst = subprocess.run(["./lsstinstall", "-T", tag], cwd=stack, capture_output=True, text=True, timeout=30)
    assert inst.returncode == 0, inst.stderr
    assert "STAND-IN" in inst.stdout
    assert (stack / "loadLSST.sh").read_text() == (stack / "loadLSST.bash").read_text()

    out_dir = tmp_path / "job-out"
    script = f"""
        set -euo pipefail
        source loadLSST.bash
        echo "BEFORE=[$(eups list -t {tag} lsst_distrib)]"
        eups distrib install -t {tag} lsst_distrib
        echo "AFTER=[$(eups list -t {tag} lsst_distrib)]"
        setup lsst_distrib
        echo "DIR=$LSST_DISTRIB_DIR"
        pipetask --help
        LSST_JOB_OUTPUT_DIR={out_dir} pipetask run -b repo -i HSC/raw -o u/demo/run1 -p p.yaml
    """
    res = subprocess.run(["bash", "-c", script], cwd=stack, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "BEFORE=[]" in res.stdout
    after = re.search(r"AFTER=\[(.*)\]", res.stdout)
    assert after and "lsst_distrib" in after.group(1) and tag in after.group(1)
    assert f"DIR={stack}/stack/{tag}" in res.stdout
    assert "usage: pipetask run" in res.stdout
    written = (out_dir / "pipetask-run-u_demo_run1.txt").read_text()
    assert "STAND-IN" in written and "output=u/demo/run1" in written


def test_lsstinstall_standin_rejects_unknown_args(tmp_path: Path) -> None:
    res = subprocess.run([str(LSSTINSTALL), "--bogus"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "unknown argument" in res.stderr
    assert not (tmp_path / "loadLSST.sh").exists()


@needs_slurm
def test_the_graceful_end_holds_pending_jobs_and_signals_running_ones(slurm: LocalSlurm, tmp_path: Path) -> None:
    """What a teardown runs on the head node before compute stops (render_end_jobs_command),
    on a real Slurm: the running job gets SIGTERM and saves its work; the pending one is held
    and does not start when the CPUs free up."""
    from lsstctl.domain.scripts import render_end_jobs_command

    env = slurm.env()
    script = tmp_path / "work.sh"
    script.write_text(
        f"#!/bin/bash\ntrap 'echo saved > {tmp_path}/saved; exit 0' TERM\n"
        f"echo started > {tmp_path}/started\nfor i in $(seq 600); do sleep 0.1; done\n"
    )
    running = _run(["sbatch", "--parsable", "-c", "1", str(script)], env, cwd=tmp_path).stdout.strip()
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "started").exists(), "the first job never started"
    pending = _run(
        ["sbatch", "--parsable", "-c", "2", "--wrap", f"touch {tmp_path}/ran"], env, cwd=tmp_path
    ).stdout.strip()
    assert running.isdigit() and pending.isdigit()
    try:
        ended = subprocess.run(
            ["bash", "-c", render_end_jobs_command(pending=[pending], running=[running])],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert ended.returncode == 0 and "ended" in ended.stdout, ended.stderr
        _wait_job_state(running, env, "COMPLETED")  # it saved its work and exited 0
        assert (tmp_path / "saved").read_text() == "saved\n"
        time.sleep(1.5)  # the CPUs are free: a job not held would start now
        held = _run(["scontrol", "show", "job", "-o", pending], env).stdout
        # Held by root (SSM runs as root): JobHeldAdmin; by the job's user: JobHeldUser.
        assert re.search(r"JobState=PENDING Reason=JobHeld(Admin|User)\b", held), held
        assert not (tmp_path / "ran").exists()
    finally:
        _run(["scancel", running, pending], env)
