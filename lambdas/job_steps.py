"""Lambda for the run-job workflow's Tasks (statemachines/run_job.asl.json)."""
from lsstctl.services import jobs
from lsstctl.handlers import step_handler

lambda_handler = step_handler(
    {
        "submit": lambda d, e: jobs.submit_step(d, e.cluster, e.job_id),
        "poll": lambda d, e: jobs.poll_step(d, e.cluster, e.job_id, e.deadline),
        "failed": lambda d, e: jobs.job_failed(d, e.cluster, e.job_id, e.error),
    }
)
