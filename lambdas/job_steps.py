"""Lambda for the run-job workflow's Tasks (statemachines/run_job.asl.json), and the head-node
side of two API routes (cancel, a job's log: adapters/job_function.py), which the API's role
reaches only through this function."""

from lsstctl.handlers import step_handler
from lsstctl.services import jobs

lambda_handler = step_handler(
    {
        "submit": lambda d, e: jobs.paced(d, jobs.submit_step(d, e.cluster, e.job_id), None),
        "poll": lambda d, e: jobs.paced(d, jobs.poll_step(d, e.cluster, e.job_id, e.deadline), e.since),
        "failed": lambda d, e: jobs.job_failed(d, e.cluster, e.job_id, e.error),
        "cancel": lambda d, e: jobs.cancel_in_slurm(d, e.cluster, e.job_id),
        "log": lambda d, e: jobs.tail_log(d, e.cluster, e.job_id, e.lines),
    }
)
