"""EventBridge: a cluster's idle alarm went to ALARM -> teardown (reason idle)."""
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

from lsstctl import wiring
from lsstctl.handlers import trigger_handler
from lsstctl.services.triggers import on_idle_alarm


def _on_event(event: dict[str, Any]) -> dict[str, Any]:
    return on_idle_alarm(wiring.deps(), parse(event=event, model=EventBridgeModel).detail)


lambda_handler = trigger_handler(_on_event)
