"""Every shell script the product ships or generates is shellcheck-clean (shellcheck's JSON
output, every severity down to style). Generated scripts are rendered with awkward inputs:
spaces, quotes and shell metacharacters in everything a user controls."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lsstctl.domain.models import JobSpec
from lsstctl.domain.scripts import (
    NODE_CAP_SCRIPT,
    QUEUE_PROBE_SCRIPT,
    render_archive_command,
    render_cancel_command,
    render_install_script,
    render_job_status_command,
    render_publisher_install,
    render_sbatch_script,
    render_submit_command,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("scripts/*.sh"), ROOT / "lsstctl/emulator/standin/lsstinstall"])
AWKWARD = 'it\'s a "run" $(rm -rf /) `x` ; & | *'


def _pipetask_job() -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "isr",
            "cores": 4,
            "walltime_minutes": 90,
            "queue": "highmem",
            "pipetask": {
                "butler": "/shared/repo",
                "pipeline": "DRP.yaml#isr",
                "inputs": ["HSC/raw/all"],
                "output": f"u/alice/{AWKWARD}",
                "data_query": "exposure=903342 AND detector=10",
            },
        }
    )


def _bps_job() -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "drp",
            "queue": "compute",
            "bps": {
                "butler": f"/shared/{AWKWARD}",
                "pipeline": f"/shared/{AWKWARD}.yaml",
                "inputs": [AWKWARD],
                "output": AWKWARD,
                "data_query": AWKWARD,
                "config": {"note": AWKWARD},
            },
        }
    )


def _generated() -> dict[str, str]:
    # A command job runs the user's own shell text: ours is everything around it.
    command_job = JobSpec(command="pipetask --help", cores=1, walltime_minutes=5, name="x")
    publisher = render_publisher_install(cluster="rubin-demo-2bd806c97f", region="us-east-1", node_root="/tmp/node 1")
    inner = re.search(r"<<'LSSTCTL_PUBLISHER'\n(.*?)\nLSSTCTL_PUBLISHER", publisher, re.S)
    assert inner, "the publisher script is no longer a quoted heredoc: check it here another way"
    return {
        "install (as sent: publisher + install)": publisher
        + render_install_script(shared_dir="/shared", tag="w_2026_47", installer_url="https://ls.st/lsstinstall"),
        "queue-depth publisher (installed on the head node)": inner.group(1),
        "sbatch script (pipetask)": render_sbatch_script(
            _pipetask_job(), job_id="j-1", shared_dir="/shared", tag="w_2026_47"
        ),
        "sbatch script (command)": render_sbatch_script(
            command_job, job_id="j-2", shared_dir="/shared", tag="w_2026_47"
        ),
        "submit (as root)": render_submit_command(command_job, job_id="j-2", shared_dir="/shared", tag="w_2026_47"),
        "submit (as the login user)": render_submit_command(
            _pipetask_job(), job_id="j-1", shared_dir="/shared", tag="w_2026_47", run_as="ec2-user"
        ),
        "sbatch script (bps)": render_sbatch_script(_bps_job(), job_id="j-3", shared_dir="/shared", tag="w_2026_47"),
        "sbatch script (command array, resources)": render_sbatch_script(
            JobSpec(command="srun hostname", nodes=2, tasks=4, memory_mb=2048, array="0-9%2", queue="q"),
            job_id="j-4",
            shared_dir="/shared",
            tag="w_2026_47",
        ),
        "job status": render_job_status_command("42", f"/shared/outputs/{AWKWARD}"),
        "cancel": render_cancel_command("42", "j-1"),
        "install with the demo repository": render_install_script(
            shared_dir="/lsst-cache",
            tag="w_2026_47",
            installer_url="https://ls.st/lsstinstall",
            demo_in=f"/shared/{AWKWARD}",
            run_as="ec2-user",
        ),
        "archive": render_archive_command(shared_dir="/shared", bucket="lsstctl-archive", prefix="alice/rubin-demo"),
        # As SSM runs the queue probe document: its one parameter substituted (on AWS, empty).
        "queue probe (on AWS)": QUEUE_PROBE_SCRIPT.replace("{{ nodeRoot }}", ""),
        "queue probe (emulator)": QUEUE_PROBE_SCRIPT.replace("{{ nodeRoot }}", "/tmp/nodes/rubin-demo-2bd806c97f"),
        "node cap (on AWS)": NODE_CAP_SCRIPT.replace("{{ nodeRoot }}", "").replace("{{ caps }}", "compute=3 gpu=0"),
    }


def shellcheck(text: str) -> list[str]:
    """shellcheck's findings, one line each; scripts without a shebang are bash (SSM's
    AWS-RunShellScript runs them with the head node's sh, which is bash on alinux2023)."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: run `make deps` (scripts/install-system-packages.sh)")
    args = ["shellcheck", "--format=json1", "--severity=style"]
    if not text.startswith("#!"):
        args.append("--shell=bash")
    done = subprocess.run([*args, "-"], input=text, capture_output=True, text=True, check=False)
    comments = json.loads(done.stdout or '{"comments": []}')["comments"]
    lines = text.splitlines()
    return [
        f"SC{c['code']} ({c['level']}) line {c['line']}: {c['message']} | {lines[c['line'] - 1].strip()[:120]}"
        for c in comments
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_scripts_are_shellcheck_clean(path: Path):
    assert shellcheck(path.read_text()) == []


@pytest.mark.parametrize("name", list(_generated()))
def test_generated_scripts_are_shellcheck_clean(name: str):
    assert shellcheck(_generated()[name]) == []


def test_the_check_finds_what_it_should():
    findings = shellcheck("#!/bin/bash\nrm -rf $1/*\n")
    assert any(f.startswith("SC2115") or f.startswith("SC2086") for f in findings), findings
