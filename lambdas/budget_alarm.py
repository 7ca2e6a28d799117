"""SNS: an AWS Budgets notification -> teardown of the clusters it concerns."""
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import SnsModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from lsstctl import wiring
from lsstctl.observability import logger, metrics, tracer
from lsstctl.services.triggers import on_budget_notification


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = parse(event=event, model=SnsModel).Records
    return {"notifications": [on_budget_notification(wiring.deps(), r.Sns.Message) for r in records]}
