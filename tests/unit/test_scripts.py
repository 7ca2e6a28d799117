"""Head-node scripts: rendering, quoting, and parsing Slurm's answers."""

import json

import pytest
import yaml

from lsstctl.domain.models import JobSpec
from lsstctl.domain.scripts import (
    SlurmJob,
    parse_job_status,
    pipetask_argv,
    render_bps_config,
    render_install_script,
    render_sbatch_script,
    render_submit_command,
)


def test_pipetask_job_becomes_a_pipetask_run_of_option_value_arguments():
    spec = JobSpec.model_validate(
        {
            "pipetask": {
                "butler": "/shared/repo",
                "pipeline": "DRP.yaml",
                "subset": "isr",
                "inputs": ["HSC/raw/all", "HSC/calib"],
                "output": "--help",
                "data_query": "exposure=903342 AND detector=10",
                "extra_args": ["--register-dataset-types"],
            },
            "cores": 4,
        }
    )
    argv = pipetask_argv(spec, "/shared/outputs/j-1/pipetask.qg")
    assert argv == [
        "pipetask",
        "run",
        "--butler-config=/shared/repo",
        "--pipeline=DRP.yaml#isr",
        "--output=--help",
        "--processes=4",
        "--save-qgraph=/shared/outputs/j-1/pipetask.qg",
        "--input=HSC/raw/all",
        "--input=HSC/calib",
        "--data-query=exposure=903342 AND detector=10",
        "--register-dataset-types",
    ]


def test_a_bps_job_renders_ctrl_bps_parsls_slurm_site_and_passes_the_rest_through():
    spec = JobSpec.model_validate(
        {
            "name": "campaign",
            "queue": "compute",
            "bps": {
                "butler": "/shared/repo",
                "pipeline": "/shared/p.yaml",
                "subset": "step1",
                "inputs": ["a", "b"],
                "output": "u/alice/x",
                "data_query": "detector = 1",
                "cores_per_node": 4,
                "pilot_walltime_minutes": 90,
                "config": {"requestMemory": 4096, "operator": "alice"},
            },
        }
    )
    config = yaml.safe_load(render_bps_config(spec, job_id="j-9", out_dir="/shared/outputs/j-9"))
    assert config["pipelineYaml"] == "/shared/p.yaml#step1"
    assert config["payload"] == {
        "payloadName": "run",
        "butlerConfig": "/shared/repo",
        "inCollection": "a,b",
        "dataQuery": "detector = 1",
        "output": "u/alice/x",
    }
    assert config["wmsServiceClass"] == "lsst.ctrl.bps.parsl.ParslService" and config["computeSite"] == "slurm"
    site = config["site"]["slurm"]
    assert site["class"] == "lsst.ctrl.bps.parsl.sites.Slurm" and site["cores_per_node"] == 4
    assert site["walltime"] == "01:30:00"
    assert site["scheduler_options"].splitlines() == ["#SBATCH --comment=lsstctl-j-9", "#SBATCH --partition=compute"]
    assert config["requestMemory"] == 4096 and config["operator"] == "alice" and config["campaign"] == "campaign"
    assert config["submitPath"] == "/shared/outputs/j-9/submit/{outputRun}"


def test_bps_config_may_not_override_what_the_fields_set():
    spec = JobSpec.model_validate(
        {"bps": {"butler": "r", "pipeline": "p.yaml", "inputs": ["a"], "config": {"computeSite": "elsewhere"}}}
    )
    with pytest.raises(ValueError, match="computeSite"):
        render_bps_config(spec, job_id="j-1", out_dir="/o")


def test_sbatch_script_asks_for_what_the_job_needs():
    spec = JobSpec(command="echo hi", cores=3, walltime_minutes=90, queue="big", name="x")
    script = render_sbatch_script(spec, job_id="j-1", shared_dir="/shared", tag="w_2026_47")
    assert "#SBATCH --cpus-per-task=3" in script
    assert "#SBATCH --time=90" in script
    assert "#SBATCH --partition=big" in script
    assert "#SBATCH --output=/shared/outputs/j-1/slurm-%j.out" in script
    assert "#SBATCH --nodes=1" in script and "#SBATCH --ntasks=1" in script and "--mem" not in script
    assert script.rstrip().endswith("echo hi")
    many = render_sbatch_script(
        JobSpec(command="srun hostname", nodes=2, tasks=8, memory_mb=3000, array="0-9%2"),
        job_id="j-2",
        shared_dir="/shared",
        tag="w_2026_47",
    )
    for line in (
        "--nodes=2",
        "--ntasks=8",
        "--mem=3000M",
        "--array=0-9%2",
        "--output=/shared/outputs/j-2/slurm-%A_%a.out",
    ):
        assert f"#SBATCH {line}" in many


def test_user_text_never_reaches_the_submitting_shell():
    # The command is user text; it travels base64-encoded, so nothing in it runs outside the job.
    spec = JobSpec(command="true\nEOF\n'; touch /tmp/pwned; echo $(id)")
    submit = render_submit_command(spec, job_id="j-2", shared_dir="/shared", tag="w_2026_47")
    assert "pwned" not in submit and "$(id)" not in submit


def test_install_script_quotes_its_parameters():
    script = render_install_script(
        shared_dir="/shared dir",
        tag="w_2026_47",
        installer_url="file:///x y/lsstinstall",
        log_uri="s3://archive/alice/c 1/g1/install/w_2026_47.log",
        timeout_seconds=600,
    )
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
    assert (
        "a release (v30_0_7" in error["msg"] and "a weekly (w_2026_47)" in error["msg"] and "w_latest" in error["msg"]
    )


# squeue --json as Slurm 22.05 (the emulator's, data parser v0.0.38) prints a job, cut to the
# fields the status script keeps; the exit code is the wait status (3 << 8).
SQUEUE_22_05 = {
    "job_id": 7,
    "array_job_id": 0,
    "array_task_id": None,
    "job_state": "FAILED",
    "exit_code": 768,
    "state_reason": "NonZeroExitCode",
    "start_time": 1796508676,
    "end_time": 1796508678,
    "node_count": 1,
    "cpus": 2,
    "nodes": "localhost",
    "partition": "compute",
}
# The same job as later Slurm versions print it (lists of states, numbers as objects).
SQUEUE_24_05 = {
    **SQUEUE_22_05,
    "job_state": ["FAILED"],
    "exit_code": {
        "status": ["EXITED"],
        "return_code": {"set": True, "infinite": False, "number": 3},
        "signal": {"id": {"set": False, "number": 0}},
    },
    "start_time": {"set": True, "number": 1796508676},
    "end_time": {"set": True, "number": 1796508678},
}


def status(*jobs, quanta=None):
    return json.dumps({"source": "squeue", "jobs": list(jobs), "quanta": quanta})


@pytest.mark.parametrize("record", [SQUEUE_22_05, SQUEUE_24_05], ids=["slurm-22.05", "slurm-24.05"])
def test_slurms_json_record_becomes_the_jobs_state_exit_code_and_times(record):
    job = parse_job_status(status(record))
    assert job == SlurmJob(
        state="failed",
        slurm_state="FAILED",
        exit_code="3:0",
        reason="NonZeroExitCode",
        started_at=1796508676,
        ended_at=1796508678,
        node_count=1,
        cpus=2,
        nodes="localhost",
        partition="compute",
        quanta=None,
        source="squeue",
    )


@pytest.mark.parametrize(
    "slurm, ours",
    [
        ("PENDING", "pending"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("COMPLETED", "completed"),
        ("CANCELLED", "cancelled"),
        ("TIMEOUT", "timeout"),
        ("NODE_FAIL", "node_fail"),
        ("BOOT_FAIL", "node_fail"),
        ("OUT_OF_MEMORY", "out_of_memory"),
        ("PREEMPTED", "cancelled"),
        ("DEADLINE", "timeout"),
    ],
)
def test_slurm_states_map_to_job_states(slurm, ours):
    assert parse_job_status(status({**SQUEUE_22_05, "job_state": slurm})).state == ours


def test_a_waiting_job_has_no_start_and_a_running_one_no_end():
    # squeue gives a pending job its expected start, a running one its expected end: not facts.
    pending = parse_job_status(status({**SQUEUE_22_05, "job_state": "PENDING", "state_reason": "Resources"}))
    assert pending.started_at is None and pending.ended_at is None and pending.reason == "Resources"
    running = parse_job_status(status({**SQUEUE_22_05, "job_state": "RUNNING"}))
    assert running.started_at == 1796508676 and running.ended_at is None


def test_an_array_is_running_while_any_task_runs_then_ends_as_its_worst_task():
    done = {**SQUEUE_22_05, "job_state": "COMPLETED", "exit_code": 0}
    assert parse_job_status(status(done, {**SQUEUE_22_05, "job_state": "RUNNING"})).state == "running"
    ended = parse_job_status(status(done, {**done, "end_time": 1796508690}, SQUEUE_22_05))
    assert (ended.state, ended.exit_code, ended.ended_at) == ("failed", "3:0", 1796508690)


def test_a_job_slurm_does_not_know_is_none_and_text_is_an_error_not_a_guess():
    assert parse_job_status(status()) is None
    with pytest.raises(ValueError, match="unrecognised"):
        parse_job_status("slurm_load_jobs error: Invalid job id specified")
    with pytest.raises(ValueError, match="unrecognised Slurm job state"):
        parse_job_status(status({**SQUEUE_22_05, "job_state": "WEIRD"}))


def test_the_middlewares_quanta_come_with_the_status():
    job = parse_job_status(status(SQUEUE_22_05, quanta={"expected": 5, "succeeded": 3, "failed": 1, "blocked": 1}))
    assert job.quanta == {"expected": 5, "succeeded": 3, "failed": 1, "blocked": 1}


def test_jobs_run_as_the_login_user_not_root():
    spec = JobSpec(command="id -un")
    as_user = render_submit_command(spec, job_id="j-3", shared_dir="/shared", tag="w_2026_47", run_as="ec2-user")
    assert "runuser -u ec2-user -- sbatch --parsable" in as_user
    as_root = render_submit_command(spec, job_id="j-3", shared_dir="/shared", tag="w_2026_47", run_as="root")
    assert "runuser" not in as_root and "\nsbatch --parsable" in as_root


def test_paths_on_the_shared_storage_are_given_as_the_head_node_sees_them():
    spec = JobSpec.model_validate(
        {"pipetask": {"butler": "/shared/demo/repo", "pipeline": "/shared/p.yaml", "inputs": ["i"], "output": "o"}}
    )
    local = render_sbatch_script(
        spec, job_id="j-1", shared_dir="/tmp/nodes/c1/shared", tag="w_2026_47", mount_dir="/shared"
    )
    assert (
        "--butler-config=/tmp/nodes/c1/shared/demo/repo" in local and "--pipeline=/tmp/nodes/c1/shared/p.yaml" in local
    )
    # Elsewhere, and on AWS (the head node's view is the mount itself), paths stay as given.
    other = JobSpec.model_validate(
        {"pipetask": {"butler": "/sharedother/repo", "pipeline": "s3://b/p.yaml", "inputs": ["i"], "output": "o"}}
    )
    kept = render_sbatch_script(other, job_id="j-1", shared_dir="/tmp/nodes/c1/shared", tag="w", mount_dir="/shared")
    assert "--butler-config=/sharedother/repo" in kept and "--pipeline=s3://b/p.yaml" in kept
    on_aws = render_sbatch_script(spec, job_id="j-1", shared_dir="/shared", tag="w", mount_dir="/shared")
    assert "--butler-config=/shared/demo/repo" in on_aws
