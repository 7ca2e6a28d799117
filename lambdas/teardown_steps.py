"""Lambda for the teardown workflow's Tasks (statemachines/teardown.asl.json)."""

from lsstctl.handlers import step_handler
from lsstctl.services import teardown_workflow as steps
from lsstctl.services.remote import paced

lambda_handler = step_handler(
    {
        "begin": lambda d, e: steps.begin_teardown(d, e.cluster, e.generation, e.execution, e.reason),
        "end_jobs": lambda d, e: steps.end_jobs(d, e.cluster),
        "stop_fleet": lambda d, e: steps.stop_fleet(d, e.cluster),
        "archive": lambda d, e: paced(d, steps.start_archive(d, e.cluster, e.poll), None),
        "poll_archive": lambda d, e: paced(d, steps.poll_archive(d, e.cluster, e.command_id, e.deadline), e.since),
        "delete": lambda d, e: paced(d, steps.delete_cluster(d, e.cluster, e.poll), None),
        "poll_delete": lambda d, e: paced(d, steps.poll_delete(d, e.cluster, e.deadline), e.since),
        "finish": lambda d, e: steps.finish_teardown(d, e.cluster),
        "failed": lambda d, e: steps.teardown_failed(d, e.cluster, e.execution, e.error),
    },
    retries="cleanup",  # the clean-up path: its own clients, no retry quota to run dry
)
