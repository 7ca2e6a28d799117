"""SNS: an AWS Budgets notification -> teardown of the clusters it concerns."""

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import SnsModel

from lsstctl import wiring
from lsstctl.handlers import trigger_handler
from lsstctl.services.triggers import on_budget_notification


def _on_notification(event: dict[str, Any]) -> dict[str, Any]:
    records = parse(event=event, model=SnsModel).Records
    return {"notifications": [on_budget_notification(wiring.deps(), str(r.Sns.Message)) for r in records]}


lambda_handler = trigger_handler(_on_notification)
