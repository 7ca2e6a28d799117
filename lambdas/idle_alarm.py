"""EventBridge: a cluster's idle alarm went to ALARM -> teardown (reason idle)."""
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from lsstctl import wiring
from lsstctl.observability import logger, metrics, tracer
from lsstctl.services.triggers import on_idle_alarm


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = parse(event=event, model=EventBridgeModel)
    return on_idle_alarm(wiring.deps(), parsed.detail)
