"""Scheduled every minute (EventBridge): meter every cluster, end those over budget,
past their lifetime, or idle."""
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lsstctl import wiring
from lsstctl.observability import logger, metrics, tracer
from lsstctl.services.costs import guard_tick


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = guard_tick(wiring.deps())
    logger.info("guard tick", extra=summary)
    return summary
