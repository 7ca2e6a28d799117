"""The head-node scripts, run for real with bash on this machine (which plays the head node)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from lsstctl.domain.models import JobSpec
from lsstctl.domain.scripts import render_install_script, render_submit_command
from lsstctl.emulator.runtime import STANDIN_INSTALLER


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_install_is_skipped_when_the_tag_is_already_there(tmp_path: Path):
    script = render_install_script(shared_dir=str(tmp_path), tag="w_2026_47", installer_url=STANDIN_INSTALLER.as_uri())
    first = bash(script)
    assert first.returncode == 0, first.stderr
    assert "installed in" in first.stdout
    second = bash(script)
    assert second.returncode == 0 and "already installed" in second.stdout and "skipped" in second.stdout
    # A new tag on the same storage is installed beside the first.
    other = bash(render_install_script(shared_dir=str(tmp_path), tag="v30_0_7", installer_url=STANDIN_INSTALLER.as_uri()))
    assert other.returncode == 0 and "v30_0_7 installed" in other.stdout


def _recording_aws(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An `aws` on PATH that records its arguments and the file it is asked to copy."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "aws-calls"
    (bin_dir / "aws").write_text(f'#!/bin/bash\necho "$@" >> {calls}\ncp "$4" {tmp_path}/shipped.log\n')
    (bin_dir / "aws").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def test_install_fails_loudly_when_the_installer_cannot_be_fetched_and_ships_its_log(tmp_path: Path):
    env, calls = _recording_aws(tmp_path)
    result = bash(render_install_script(shared_dir=str(tmp_path), tag="w_2026_47", installer_url="file:///nonexistent/lsstinstall",
                                        log_uri="s3://archive/alice/c1/g1/install/w_2026_47.log"), env)
    assert result.returncode != 0
    assert "curl" in result.stdout or "Couldn't" in result.stdout
    # The log went to S3 all the same, with curl's complaint in it
    args = calls.read_text().split()
    assert args[:3] == ["s3", "cp", "--only-show-errors"] and args[4] == "s3://archive/alice/c1/g1/install/w_2026_47.log"
    assert args[3].startswith(f"{tmp_path}/lsst_stack/w_2026_47/install.") and args[3].endswith(".log")
    assert "curl" in (tmp_path / "shipped.log").read_text()


def test_an_installed_stack_is_group_writable_and_setgid_and_its_log_shipped(tmp_path: Path):
    env, calls = _recording_aws(tmp_path)
    script = render_install_script(shared_dir=str(tmp_path), tag="v30_0_7", installer_url=STANDIN_INSTALLER.as_uri(),
                                   log_uri="s3://archive/alice/c1/g1/install/v30_0_7.log")
    result = bash(script, env)
    assert result.returncode == 0, result.stdout + result.stderr
    mode = (tmp_path / "lsst_stack" / "v30_0_7").stat().st_mode
    assert mode & 0o2000 and mode & 0o020  # setgid, group-writable: a shared stack
    assert "s3://archive/alice/c1/g1/install/v30_0_7.log" in calls.read_text()
    assert "stand-in" in (tmp_path / "shipped.log").read_text()


def test_resubmitting_a_job_returns_the_first_slurm_id(tmp_path: Path):
    # Given a stand-in sbatch that counts its calls
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\necho x >> {calls}\necho \"$(wc -l < {calls})\"\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    command = render_submit_command(JobSpec(command="echo hi"), job_id="j-1", shared_dir=str(tmp_path / "shared"), tag="w_2026_47")
    # When the same submission is delivered twice (SSM and Step Functions may retry)
    first, second = bash(command, env), bash(command, env)
    # Then Slurm saw one job and both deliveries report its id
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == second.stdout.strip() == "1"
    assert calls.read_text().count("x") == 1
    written = (tmp_path / "shared" / "outputs" / "j-1" / "job.sbatch").read_text()
    assert written.endswith("echo hi\n")


def test_job_text_arrives_byte_for_byte(tmp_path: Path):
    nasty = "printf '%s\\n' \"it's $HOME\" 'EOF' \"LSSTCTL_EOF\"; echo `date`"
    command = render_submit_command(JobSpec(command=nasty), job_id="j-2", shared_dir=str(tmp_path), tag="w_2026_47")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/bash\necho 7\n")
    (bin_dir / "sbatch").chmod(0o755)
    assert bash(command, {"PATH": f"{bin_dir}:{os.environ['PATH']}"}).returncode == 0
    assert (tmp_path / "outputs" / "j-2" / "job.sbatch").read_text().endswith(nasty + "\n")


def test_the_stack_cache_keeps_used_tags_and_removes_ones_unused_past_retention(tmp_path: Path):
    env, _ = _recording_aws(tmp_path)
    stacks = tmp_path / "lsst_stack"
    for tag, age_days in (("w_2026_01", 40), ("w_2026_30", 3), ("w_2026_02", 40)):
        (stacks / tag).mkdir(parents=True)
        (stacks / tag / ".last-used").touch()
        os.utime(stacks / tag / ".last-used", (time.time() - age_days * 86400,) * 2)
    # An install of w_2026_02 is running elsewhere: its lock is held
    holder = subprocess.Popen(["flock", str(stacks / "w_2026_02" / ".install.lock"), "sleep", "30"])
    try:
        time.sleep(0.3)
        script = render_install_script(shared_dir=str(tmp_path), tag="v30_0_7", installer_url=STANDIN_INSTALLER.as_uri(),
                                       retention_days=30)
        result = bash(script, env)
    finally:
        holder.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in stacks.iterdir()) == ["v30_0_7", "w_2026_02", "w_2026_30"]
    assert "removed" in result.stdout and "w_2026_01" in result.stdout
    # A second cluster with the same tag finds it: the cache's hit, logged like an install
    again = bash(script, env)
    assert again.returncode == 0 and "v30_0_7 already installed in" in again.stdout
