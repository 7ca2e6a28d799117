"""The Lambda boundary: one event model and dispatcher for the workflows' Tasks, one
wrapper for the triggers, and the one mapping of failures to Step Functions error names.

A state machine Task sends {"action": ..., "cluster": ..., ...}; the handler parses it,
calls one service function and returns its dict. Exceptions keep their class names, which
is what Retry and Catch in statemachines/ match on. A failure that came from AWS is
classified once (`lsstctl.adapters.aws.classify`): transient ones are raised as
`AwsUnavailableError` (retried), permanent ones as `AwsError`.

Every step is idempotent (Step Functions may run it twice), so a step whose AWS call failed
transiently is first re-run in place, a few times within seconds (`step_attempts`), before it
fails into the workflow's own Retry: a step that makes fifteen AWS calls would otherwise fail
most of its attempts on a bad day and could spend them all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from lsstctl import wiring
from lsstctl.adapters.aws import RetryProfile, aws_unavailable, classify, retry_profile, retrying
from lsstctl.errors import ValidationError
from lsstctl.observability import bind, invocation_context, logger, metrics, tracer
from lsstctl.services.deps import Deps

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


class StepEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: str
    cluster: str  # the cluster's id (Cluster.id)
    generation: int = 0
    execution: str | None = None
    job_id: str | None = None
    reason: str | None = None
    poll: dict[str, int] = {}
    deadline: str | None = None
    since: str | None = None  # a poll's: when the waiting began (remote.paced)
    command_id: str | None = None
    error: dict[str, Any] | None = None
    lines: int = 100  # the `log` action: how many of the log's last lines
    # The API request (or trigger) that started the workflow: on every log line.
    request_id: str | None = None


class ChatStepEvent(BaseModel):
    """A Task of the chatops workflow: the Slack command as it came, and who it acts as."""

    model_config = ConfigDict(extra="ignore")

    action: str
    request: dict[str, str]
    owner: str
    admin: bool = False
    execution: str | None = None
    error: dict[str, Any] | None = None


Action = Callable[[Deps, Any], dict[str, Any]]


def classified(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Raise AWS failures as the control plane's errors (their names drive Retry/Catch)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            mapped = classify(error)
            if mapped is None or mapped is error:
                raise
            logger.warning("AWS call failed", extra={"error": mapped.code, "aws_code": mapped.details})
            raise mapped from error

    return run


def _retried_in_place(error: BaseException) -> bool:
    if not aws_unavailable(error):
        return False  # the control plane's own "not yet", or a permanent failure
    logger.info("step retried in place", extra={"error": str(error)[:300]})
    return True


def step_handler(
    actions: dict[str, Action], model: type[BaseModel] = StepEvent, *, retries: RetryProfile = "default"
) -> Handler:
    """`retries="cleanup"`: the clean-up path's own clients, with no retry quota to run dry
    (lsstctl.adapters.aws.CLEANUP_RETRY)."""

    @invocation_context(correlation_id_path="execution")
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics
    @classified
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        step: Any = parse(event=event, model=model)
        bind(
            cluster=getattr(step, "cluster", None),
            action=step.action,
            job_id=getattr(step, "job_id", None),
            request_id=getattr(step, "request_id", None),
        )
        action = actions.get(step.action)
        if action is None:
            raise ValidationError(f"unknown action {step.action!r}; expected one of {sorted(actions)}")
        with retry_profile(retries):
            deps = wiring.deps()
            return retrying(
                lambda: action(deps, step),
                attempts=deps.settings.step_attempts,
                base_seconds=deps.settings.step_backoff_seconds,
                sleep=deps.sleep,
                retry_on=_retried_in_place,
            )

    return lambda_handler


def trigger_handler(run: Callable[[dict[str, Any]], dict[str, Any]], *, retries: RetryProfile = "default") -> Handler:
    """A scheduled or event trigger (guard, reconciler, alarms, budgets): its invocation's
    id correlates its lines; AWS failures are classified so that EventBridge's and SNS's
    own retries see a clean error."""

    @invocation_context()
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics
    @classified
    @functools.wraps(run)
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        with retry_profile(retries):
            return run(event)

    return lambda_handler
