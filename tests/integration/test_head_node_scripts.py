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
    other = bash(
        render_install_script(shared_dir=str(tmp_path), tag="v30_0_7", installer_url=STANDIN_INSTALLER.as_uri())
    )
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
    result = bash(
        render_install_script(
            shared_dir=str(tmp_path),
            tag="w_2026_47",
            installer_url="file:///nonexistent/lsstinstall",
            log_uri="s3://archive/alice/c1/g1/install/w_2026_47.log",
        ),
        env,
    )
    assert result.returncode != 0
    assert "curl" in result.stdout or "Couldn't" in result.stdout
    # The log went to S3 all the same, with curl's complaint in it
    args = calls.read_text().split()
    assert (
        args[:3] == ["s3", "cp", "--only-show-errors"] and args[4] == "s3://archive/alice/c1/g1/install/w_2026_47.log"
    )
    assert args[3].startswith(f"{tmp_path}/lsst_stack/w_2026_47/install.") and args[3].endswith(".log")
    assert "curl" in (tmp_path / "shipped.log").read_text()


def test_an_installed_stack_is_group_writable_and_setgid_and_its_log_shipped(tmp_path: Path):
    env, calls = _recording_aws(tmp_path)
    script = render_install_script(
        shared_dir=str(tmp_path),
        tag="v30_0_7",
        installer_url=STANDIN_INSTALLER.as_uri(),
        log_uri="s3://archive/alice/c1/g1/install/v30_0_7.log",
    )
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
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho x >> {calls}\necho "$(wc -l < {calls})"\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    command = render_submit_command(
        JobSpec(command="echo hi"), job_id="j-1", shared_dir=str(tmp_path / "shared"), tag="w_2026_47"
    )
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
        script = render_install_script(
            shared_dir=str(tmp_path), tag="v30_0_7", installer_url=STANDIN_INSTALLER.as_uri(), retention_days=30
        )
        result = bash(script, env)
    finally:
        holder.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in stacks.iterdir()) == ["v30_0_7", "w_2026_02", "w_2026_30"]
    assert "removed" in result.stdout and "w_2026_01" in result.stdout
    # A second cluster with the same tag finds it: the cache's hit, logged like an install
    again = bash(script, env)
    assert again.returncode == 0 and "v30_0_7 already installed in" in again.stdout


SINFO = """compute-dy-cr1-1 idle~ none
compute-dy-cr1-10 alloc none
compute-dy-cr1-2 idle~ none
compute-dy-cr1-3 drain~ lsstctl budget cap
compute-dy-cr1-4 mix none
compute-st-cr1-1 alloc none
compute-dy-cr1-5 drain~ an admin's reason
compute-dy-cr1-5 drain~ an admin's reason
localhost idle none
"""


def _fake_slurm(tmp_path: Path, listing: str) -> tuple[dict[str, str], Path]:
    """`sinfo` answering `listing` for any partition, `scontrol` recording its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls"
    (tmp_path / "listing").write_text(listing)
    (bin_dir / "sinfo").write_text(f"#!/bin/bash\ncat {tmp_path / 'listing'}\n")
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')
    for tool in ("sinfo", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def _node_cap(root: Path, caps: str) -> str:
    from lsstctl.domain.scripts import NODE_CAP_SCRIPT

    return NODE_CAP_SCRIPT.replace("{{ nodeRoot }}", str(root)).replace("{{ caps }}", caps)


def test_the_node_cap_keeps_billing_nodes_first_and_drains_the_rest_never_static_or_foreign(tmp_path: Path):
    """ParallelCluster's node names, as sinfo lists them: the three billing nodes (one static)
    are kept under a cap of 3; the powered-down dynamic ones are drained, except the one
    already drained by the cap and the one an admin drained; the emulator's `localhost` and
    other queues' nodes are never touched; the cap is kept where the emulator reads it."""
    from lsstctl.domain.scripts import NODE_CAP_DIR, node_cap_applied

    env, calls = _fake_slurm(tmp_path, SINFO)
    done = bash(_node_cap(tmp_path / "root", "compute=3 gpu=0"), env)
    assert done.returncode == 0, done.stderr
    assert node_cap_applied(done.stdout)
    assert calls.read_text().splitlines() == [
        "update nodename=compute-dy-cr1-1,compute-dy-cr1-2 state=DRAIN reason=lsstctl budget cap"
    ]
    assert (tmp_path / "root" / NODE_CAP_DIR.lstrip("/") / "compute").read_text().strip() == "3"
    assert (tmp_path / "root" / NODE_CAP_DIR.lstrip("/") / "gpu").read_text().strip() == "0"
    # The cap rises to 6: the node the cap drained comes back; the admin's stays drained.
    calls.unlink()
    risen = bash(_node_cap(tmp_path / "root", "compute=6"), env)
    assert risen.returncode == 0 and '"resumed": 1' in risen.stdout
    assert calls.read_text().splitlines() == ["update nodename=compute-dy-cr1-3 state=RESUME"]
    # A cap of 0 never drains the static node.
    calls.unlink()
    bash(_node_cap(tmp_path / "root", "compute=0"), env)
    drained = calls.read_text().split()[1].removeprefix("nodename=").split(",")
    assert "compute-st-cr1-1" not in drained and "localhost" not in drained
    assert set(drained) == {"compute-dy-cr1-10", "compute-dy-cr1-4", "compute-dy-cr1-1", "compute-dy-cr1-2"}


def test_the_node_cap_fails_loudly_when_slurm_refuses(tmp_path: Path):
    from lsstctl.domain.scripts import node_cap_applied

    env, _ = _fake_slurm(tmp_path, SINFO)
    (tmp_path / "bin" / "scontrol").write_text(
        "#!/bin/bash\necho 'slurm_update error: Invalid node name' >&2\nexit 1\n"
    )
    failed = bash(_node_cap(tmp_path / "root", "compute=1"), env)
    assert failed.returncode == 4 and not node_cap_applied(failed.stdout)
