"""Teardown triggers that arrive as events: the idle alarm (EventBridge) and AWS Budgets
notifications (SNS). Both may arrive twice; request_teardown's claim makes that harmless."""
from __future__ import annotations

import re
from typing import Any

from lsstctl.adapters.cloudwatch import ALARM_PREFIX
from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.errors import NotFoundError, ValidationError
from lsstctl.observability import logger
from lsstctl.services.clusters import request_teardown
from lsstctl.services.deps import Deps

OWNER_BUDGET_PREFIX = "lsstctl-owner-"
_BUDGET_NAME = re.compile(r"^Budget Name:\s*(\S+)\s*$", re.MULTILINE)


def on_idle_alarm(deps: Deps, detail: dict[str, Any]) -> dict[str, Any]:
    """A `CloudWatch Alarm State Change` for one of our idle alarms."""
    alarm = str(detail.get("alarmName", ""))
    state = (detail.get("state") or {}).get("value")
    if not alarm.startswith(ALARM_PREFIX):
        raise ValidationError(f"not an lsstctl idle alarm: {alarm!r}", field="alarmName")
    cluster = alarm[len(ALARM_PREFIX):]
    if state != "ALARM":
        return {"cluster": cluster, "action": "none", "state": state}
    try:
        record = request_teardown(deps, cluster, reason="idle")
    except NotFoundError:
        logger.warning("idle alarm for an unknown cluster", extra={"cluster": cluster})
        return {"cluster": cluster, "action": "none", "state": state}
    return {"cluster": cluster, "action": "teardown", "state": record.state.value}


def budget_name(message: str) -> str:
    """AWS Budgets' SNS notifications are text with a `Budget Name: <name>` line."""
    match = _BUDGET_NAME.search(message)
    if not match:
        raise ValidationError("no 'Budget Name:' line in the budget notification", field="Message")
    return match.group(1)


def on_budget_notification(deps: Deps, message: str) -> dict[str, Any]:
    """An owner's budget (lsstctl-owner-<owner>) ends that owner's clusters; any other
    budget routed here (the account-wide backstop) ends every cluster."""
    name = budget_name(message)
    owner = name[len(OWNER_BUDGET_PREFIX):] if name.startswith(OWNER_BUDGET_PREFIX) else None
    ended = []
    for cluster in deps.store.list_billing_clusters():
        if cluster.state in ACTIVE and (owner is None or cluster.owner == owner):
            request_teardown(deps, cluster.name, reason="aws_budget")
            ended.append(cluster.name)
    logger.info("budget notification", extra={"budget": name, "owner": owner, "clusters": ended})
    return {"budget": name, "owner": owner, "teardowns": ended}
