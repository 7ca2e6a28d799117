"""Lambda for the launch workflow's Tasks (statemachines/launch.asl.json)."""

from lsstctl.handlers import step_handler
from lsstctl.services import launch_workflow as steps
from lsstctl.services.remote import paced

lambda_handler = step_handler(
    {
        "start": lambda d, e: paced(d, steps.start_launch(d, e.cluster, e.generation, e.poll), None),
        "poll": lambda d, e: paced(d, steps.poll_launch(d, e.cluster, e.generation, e.deadline), e.since),
        "install": lambda d, e: paced(d, steps.start_install(d, e.cluster, e.generation, e.poll), None),
        "poll_install": lambda d, e: paced(
            d, steps.poll_install(d, e.cluster, e.generation, e.command_id, e.deadline), e.since
        ),
        "ready": lambda d, e: steps.mark_ready(d, e.cluster, e.generation),
        "failed": lambda d, e: steps.launch_failed(d, e.cluster, e.generation, e.error),
    }
)
