"""Lambdas of ChatOps: the chatops workflow's Tasks (statemachines/chatops.asl.json: do a
Slack command, or say it failed) and the notifications rule (lifecycle events to the
owner's channel)."""

from lsstctl import wiring
from lsstctl.handlers import ChatStepEvent, step_handler, trigger_handler
from lsstctl.services import chatops

lambda_handler = step_handler(
    {
        "run": lambda d, e: chatops.run_command(d, e.request, e.owner, e.admin, e.execution),
        "failed": lambda d, e: chatops.command_failed(d, e.request, e.owner, e.error),
    },
    model=ChatStepEvent,
)
notify_handler = trigger_handler(lambda event: chatops.notify(wiring.deps(), event))
