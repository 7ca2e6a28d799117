"""EventBridge: a cluster's idle alarm went to ALARM -> teardown (reason idle)."""

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

from lsstctl import wiring
from lsstctl.handlers import trigger_handler
from lsstctl.services.triggers import on_idle_alarm


def _on_event(event: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = parse(event=event, model=EventBridgeModel).detail  # type: ignore[assignment]
    return on_idle_alarm(wiring.deps(), detail)


lambda_handler = trigger_handler(_on_event)
