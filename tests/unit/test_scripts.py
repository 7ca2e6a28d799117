"""Head-node scripts: rendering, quoting, and parsing Slurm's answers."""
import shlex

import pytest

from lsstctl.domain.models import JobSpec
from lsstctl.domain.scripts import (
    job_command,
    parse_job_status,
    render_install_script,
    render_sbatch_script,
    render_submit_command,
)


def test_pipetask_job_becomes_a_quoted_pipetask_run():
    spec = JobSpec.model_validate(
        {
            "pipetask": {
                "butler": "/shared/repo",
                "pipeline": "DRP.yaml#isr",
                "inputs": ["HSC/raw/all", "HSC/calib"],
                "output": "u/alice/run 1",
                "data_query": "exposure=903342 AND detector=10",
            },
            "cores": 4,
        }
    )
    argv = shlex.split(job_command(spec))
    assert argv[:2] == ["pipetask", "run"]
    assert argv[argv.index("-o") + 1] == "u/alice/run 1"
    assert argv[argv.index("-d") + 1] == "exposure=903342 AND detector=10"
    assert argv[argv.index("-j") + 1] == "4"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-i"] == ["HSC/raw/all", "HSC/calib"]


def test_sbatch_script_asks_for_what_the_job_needs():
    spec = JobSpec(command="echo hi", cores=3, walltime_minutes=90, queue="big", name="x")
    script = render_sbatch_script(spec, job_id="j-1", shared_dir="/shared", tag="w_2026_47")
    assert "#SBATCH --cpus-per-task=3" in script
    assert "#SBATCH --time=90" in script
    assert "#SBATCH --partition=big" in script
    assert "#SBATCH --output=/shared/outputs/j-1/slurm-%j.out" in script
    assert script.rstrip().endswith("echo hi")


def test_user_text_never_reaches_the_submitting_shell():
    # The command is user text; it travels base64-encoded, so nothing in it runs outside the job.
    spec = JobSpec(command="true\nEOF\n'; touch /tmp/pwned; echo $(id)")
    submit = render_submit_command(spec, job_id="j-2", shared_dir="/shared", tag="w_2026_47")
    assert "pwned" not in submit and "$(id)" not in submit


def test_install_script_quotes_its_parameters():
    script = render_install_script(shared_dir="/shared dir", tag="w_2026_47", installer_url="file:///x y/lsstinstall",
                                   log_uri="s3://archive/alice/c 1/g1/install/w_2026_47.log", timeout_seconds=600)
    assert "STACK_DIR='/shared dir/lsst_stack/w_2026_47'" in script  # one directory per tag
    assert "INSTALLER_URL='file:///x y/lsstinstall'" in script
    assert "LOG_URI='s3://archive/alice/c 1/g1/install/w_2026_47.log'" in script
    assert "DEADLINE=$(( $(date +%s) + 600 ))" in script


def test_a_job_sets_up_its_clusters_tag():
    script = render_sbatch_script(JobSpec(command="pipetask --help"), job_id="j-1", shared_dir="/shared", tag="v30_0_7")
    assert "source /shared/lsst_stack/v30_0_7/loadLSST.bash" in script


def test_a_bad_stack_tag_is_refused_with_the_forms_there_are():
    from pydantic import ValidationError

    from lsstctl.domain.models import ClusterSpec

    with pytest.raises(ValidationError) as refused:
        ClusterSpec.model_validate({"preset": "small", "name": "c1", "budget_usd": 10, "stack_tag": "30.0.7"})
    error = refused.value.errors()[0]
    assert error["loc"] == ("stack_tag",)
    assert "a release (v30_0_7" in error["msg"] and "a weekly (w_2026_47)" in error["msg"] and "w_latest" in error["msg"]


@pytest.mark.parametrize(
    "output, expected",
    [
        ("JobState=PENDING Reason=None ... ExitCode=0:0", ("pending", "0:0", "PENDING")),
        ("JobState=RUNNING Reason=None ExitCode=0:0", ("running", "0:0", "RUNNING")),
        ("JobState=COMPLETED Reason=None ExitCode=0:0", ("completed", "0:0", "COMPLETED")),
        ("JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0", ("failed", "3:0", "FAILED")),
        ("JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15", ("failed", "0:15", "TIMEOUT")),
        ("SACCT=CANCELLED by 0|0:0", ("cancelled", "0:0", "CANCELLED")),
    ],
)
def test_slurm_states_map_to_job_states(output, expected):
    assert parse_job_status(output) == expected


def test_unknown_slurm_output_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unrecognised"):
        parse_job_status("slurm_load_jobs error: Invalid job id specified")


def test_jobs_run_as_the_login_user_not_root():
    spec = JobSpec(command="id -un")
    as_user = render_submit_command(spec, job_id="j-3", shared_dir="/shared", tag="w_2026_47", run_as="ec2-user")
    assert "runuser -u ec2-user -- sbatch --parsable" in as_user
    as_root = render_submit_command(spec, job_id="j-3", shared_dir="/shared", tag="w_2026_47", run_as="root")
    assert "runuser" not in as_root and "\nsbatch --parsable" in as_root
