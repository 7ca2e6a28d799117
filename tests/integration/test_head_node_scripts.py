"""The head-node scripts, run for real with bash on this machine (which plays the head node)."""
from __future__ import annotations

import os
import subprocess
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


def test_install_fails_loudly_when_the_installer_cannot_be_fetched(tmp_path: Path):
    result = bash(render_install_script(shared_dir=str(tmp_path), tag="w_2026_47", installer_url="file:///nonexistent/lsstinstall"))
    assert result.returncode != 0
    assert "curl" in result.stderr or "Couldn't" in result.stderr


def test_resubmitting_a_job_returns_the_first_slurm_id(tmp_path: Path):
    # Given a stand-in sbatch that counts its calls
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\necho x >> {calls}\necho \"$(wc -l < {calls})\"\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    command = render_submit_command(JobSpec(command="echo hi"), job_id="j-1", shared_dir=str(tmp_path / "shared"))
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
    command = render_submit_command(JobSpec(command=nasty), job_id="j-2", shared_dir=str(tmp_path))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/bash\necho 7\n")
    (bin_dir / "sbatch").chmod(0o755)
    assert bash(command, {"PATH": f"{bin_dir}:{os.environ['PATH']}"}).returncode == 0
    assert (tmp_path / "outputs" / "j-2" / "job.sbatch").read_text().endswith(nasty + "\n")
