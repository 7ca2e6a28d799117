"""A job's text never breaks out of its script: every field a user fills in, for every kind of
job, with quotes, `$()`, backticks, newlines, `;` and `--`, run through the batch script the
product renders (bash, with recording stand-ins for pipetask and bps) arrives at the
middleware as exactly one argument (or one YAML value), and nothing in it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from lsstctl.domain.models import JobSpec
from lsstctl.domain.scripts import render_sbatch_script, render_submit_command

NASTY = [
    "it's",
    'say "hi"',
    "$(touch {marker})",
    "`touch {marker}`",
    "a\ntouch {marker}\n",
    "x; touch {marker}; y",
    "--",
    "--help",
    "-o",
    "${{HOME}}",
    "a' ; touch {marker} ; '",
]

RECORDER = """#!/bin/bash
# Records its arguments, NUL-separated, one file per call.
n=$(ls "$LSST_JOB_OUTPUT_DIR"/argv.* 2>/dev/null | wc -l)
printf '%s\\0' "$(basename "$0")" "$@" > "$LSST_JOB_OUTPUT_DIR/argv.$n"
"""


def run_job(tmp_path: Path, spec: JobSpec) -> list[list[str]]:
    """Run the job's batch script as Slurm would (bash, in its output directory); the argv of
    every pipetask/bps call it made."""
    shared = tmp_path / "shared"
    out = shared / "outputs" / "j-1"
    out.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pipetask", "bps"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    script = render_sbatch_script(spec, job_id="j-1", shared_dir=str(shared), tag="w_2026_47")
    run = subprocess.run(
        ["bash", "-c", script],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr
    calls = []
    for path in sorted(out.glob("argv.*")):
        calls.append(path.read_bytes().decode().split("\0")[:-1])
    return calls


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.mark.parametrize("nasty", NASTY)
@pytest.mark.parametrize("field", ["butler", "pipeline", "inputs", "output", "data_query", "extra_args"])
def test_every_pipetask_field_arrives_as_one_argument(tmp_path: Path, marker: Path, field: str, nasty: str) -> None:
    value = nasty.format(marker=marker).strip()  # as the model keeps it
    fields = {"butler": "/repo", "pipeline": "p.yaml", "inputs": ["in"], "output": "u/a/out"}
    fields[field] = [value] if field in ("inputs", "extra_args") else value
    calls = run_job(tmp_path, JobSpec.model_validate({"pipetask": fields}))
    assert not marker.exists()
    assert len(calls) == 1 and calls[0][:2] == ["pipetask", "run"]
    argv = calls[0]
    expected = {
        "butler": f"--butler-config={value}",
        "pipeline": f"--pipeline={value}",
        "inputs": f"--input={value}",
        "output": f"--output={value}",
        "data_query": f"--data-query={value}",
        "extra_args": value,
    }[field]
    assert expected in argv


@pytest.mark.parametrize("nasty", NASTY)
@pytest.mark.parametrize("field", ["butler", "pipeline", "inputs", "output", "data_query", "config"])
def test_every_bps_field_arrives_as_one_yaml_value(tmp_path: Path, marker: Path, field: str, nasty: str) -> None:
    value = nasty.format(marker=marker).strip()  # as the model keeps it
    fields: dict[str, object] = {"butler": "/repo", "pipeline": "p.yaml", "inputs": ["in"]}
    fields[field] = [value] if field == "inputs" else {"note": value} if field == "config" else value
    calls = run_job(tmp_path, JobSpec.model_validate({"bps": fields}))
    assert not marker.exists()
    assert len(calls) == 1 and calls[0][:2] == ["bps", "submit"]
    config = yaml.safe_load(Path(calls[0][2]).read_text())
    found = {
        "butler": config["payload"]["butlerConfig"],
        "pipeline": config["pipelineYaml"],
        "inputs": config["payload"]["inCollection"],
        "output": config["payload"].get("output"),
        "data_query": config["payload"]["dataQuery"],
        "config": config.get("note"),
    }[field]
    assert found == value


@pytest.mark.parametrize("nasty", NASTY)
def test_a_command_job_runs_the_users_text_inside_the_job_only(tmp_path: Path, marker: Path, nasty: str) -> None:
    # A command is the user's own shell: it runs in the job, never in the submitting shell.
    spec = JobSpec(command=nasty.format(marker=marker))
    submit = render_submit_command(spec, job_id="j-1", shared_dir=str(tmp_path / "shared"), tag="w_2026_47")
    assert str(marker) not in submit


# (A queue is checked against the cluster's own queues when the job is submitted.)
@pytest.mark.parametrize("field", ["name", "array", "subset"])
@pytest.mark.parametrize("nasty", ["x\n#SBATCH --uid=0", "x;id", "$(id)", "a b", "--"])
def test_fields_that_reach_sbatch_directives_take_plain_forms_only(field: str, nasty: str) -> None:
    base = {"pipetask": {"butler": "/r", "pipeline": "p.yaml", "inputs": ["i"], "output": "o"}}
    if field == "subset":
        base["pipetask"]["subset"] = nasty  # type: ignore[index]
    elif field == "array":
        base = {"command": "true", "array": nasty}
    else:
        base[field] = nasty
    with pytest.raises(ValidationError):
        JobSpec.model_validate(base)


REPORTING_BPS = """#!/bin/bash
# bps submit: leaves a quantum graph where bps would; succeeds whatever the quanta did.
mkdir -p "$LSST_JOB_OUTPUT_DIR/submit/u/x/run/1" && touch "$LSST_JOB_OUTPUT_DIR/submit/u/x/run/1/run.qg"
"""
# pipetask report --force-v2 --full-output-filename FILE REPO GRAPH: the tasks' counts.
REPORTING_PIPETASK = """#!/bin/bash
out="${3#--full-output-filename=}"; [ "$out" = "$3" ] && out="$4"
printf '%s' '{"tasks": {"a": {"n_expected": 2, "n_successful": SUCCEEDED, "n_failed": FAILED, "n_blocked": 0}}}' > "$out"
"""


@pytest.mark.parametrize(
    "succeeded, failed, exit_code",
    [(2, 0, 0), (1, 1, 1), (0, 0, 1)],
    ids=["all succeeded", "one failed", "none ran (pilots lost)"],
)
def test_a_bps_job_fails_unless_every_quantum_succeeded(
    tmp_path: Path, succeeded: int, failed: int, exit_code: int
) -> None:
    out = tmp_path / "shared" / "outputs" / "j-1"
    out.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bps").write_text(REPORTING_BPS)
    (bin_dir / "pipetask").write_text(
        REPORTING_PIPETASK.replace("SUCCEEDED", str(succeeded)).replace("FAILED", str(failed))
    )
    for tool in ("bps", "pipetask"):
        (bin_dir / tool).chmod(0o755)
    spec = JobSpec.model_validate({"bps": {"butler": "/repo", "pipeline": "p.yaml", "inputs": ["in"]}})
    script = render_sbatch_script(spec, job_id="j-1", shared_dir=str(tmp_path / "shared"), tag="w_2026_47")
    python_dir = Path(sys.executable).parent  # `python`, as the middleware's environment has it
    run = subprocess.run(
        ["bash", "-c", script],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:{python_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)},
    )
    assert run.returncode == exit_code, run.stderr
    assert json.loads((out / "quanta.json").read_text()) == {
        "expected": 2,
        "succeeded": succeeded,
        "failed": failed,
        "blocked": 0,
    }
