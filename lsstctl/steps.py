"""The Lambda side of the workflows: one event model, one dispatcher, one error mapping.

A state machine Task sends {"action": ..., "cluster": ..., ...}; the handler parses it,
calls one service function and returns its dict. Exceptions keep their class names,
which is what Retry and Catch in statemachines/ match on; AWS throttling becomes
TransientError so that it is retried rather than treated as a failure.
"""
from __future__ import annotations

from typing import Any, Callable

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from lsstctl import wiring
from lsstctl.errors import TransientError, ValidationError
from lsstctl.observability import bind, logger, metrics, tracer
from lsstctl.services.deps import Deps

THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "ServiceUnavailable",
    "InternalError",
}


class StepEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: str
    cluster: str
    generation: int = 0
    execution: str | None = None
    job_id: str | None = None
    reason: str | None = None
    poll: dict[str, int] = {}
    deadline: str | None = None
    command_id: str | None = None
    error: dict[str, Any] | None = None


Action = Callable[[Deps, StepEvent], dict[str, Any]]


def step_handler(actions: dict[str, Action]) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    @logger.inject_lambda_context(correlation_id_path="execution", clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        step = parse(event=event, model=StepEvent)
        bind(cluster=step.cluster, action=step.action, job_id=step.job_id)
        action = actions.get(step.action)
        if action is None:
            raise ValidationError(f"unknown action {step.action!r}; expected one of {sorted(actions)}")
        try:
            return action(wiring.deps(), step)
        except ClientError as error:
            if error.response["Error"]["Code"] in THROTTLING:
                raise TransientError(str(error)) from error
            raise

    return lambda_handler
