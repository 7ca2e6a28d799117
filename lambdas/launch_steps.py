"""Lambda for the launch workflow's Tasks (statemachines/launch.asl.json)."""

from lsstctl.handlers import step_handler
from lsstctl.services import launch_workflow as steps

lambda_handler = step_handler(
    {
        "start": lambda d, e: steps.start_launch(d, e.cluster, e.generation, e.poll),
        "poll": lambda d, e: steps.poll_launch(d, e.cluster, e.generation, e.deadline),
        "install": lambda d, e: steps.start_install(d, e.cluster, e.generation, e.poll),
        "poll_install": lambda d, e: steps.poll_install(d, e.cluster, e.generation, e.command_id, e.deadline),
        "ready": lambda d, e: steps.mark_ready(d, e.cluster, e.generation),
        "failed": lambda d, e: steps.launch_failed(d, e.cluster, e.generation, e.error),
    }
)
