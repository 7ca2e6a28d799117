"""Teardown triggers that arrive as events: the idle alarm (EventBridge) and AWS Budgets
notifications (SNS). Both may arrive twice; request_teardown's claim makes that harmless."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from lsstctl.adapters.cloudwatch import ALARM_PREFIX
from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.domain.models import ClusterState as S
from lsstctl.errors import NotFoundError, ValidationError
from lsstctl.observability import logger
from lsstctl.services.clusters import request_teardown
from lsstctl.services.deps import Deps
from lsstctl.services.idle import confirm_idle

OWNER_BUDGET_PREFIX = "lsstctl-owner-"
_BUDGET_NAME = re.compile(r"^Budget Name:\s*(\S+)\s*$", re.MULTILINE)


def on_idle_alarm(deps: Deps, detail: dict[str, Any]) -> dict[str, Any]:
    """A `CloudWatch Alarm State Change` for one of our idle alarms."""
    alarm = str(detail.get("alarmName", ""))
    state = (detail.get("state") or {}).get("value")
    if not alarm.startswith(ALARM_PREFIX):
        raise ValidationError(f"not an lsstctl idle alarm: {alarm!r}", field="alarmName")
    cluster = alarm[len(ALARM_PREFIX) :]
    if state != "ALARM":
        return {"cluster": cluster, "action": "none", "state": state}
    try:
        record = deps.store.get_cluster(cluster)
    except NotFoundError:
        logger.warning("idle alarm for an unknown cluster", extra={"cluster": cluster})
        return {"cluster": cluster, "action": "none", "state": state}
    if record.state not in ACTIVE:
        return {"cluster": cluster, "action": "none", "state": state}
    ready = record.entered(S.READY)
    if ready is None or deps.clock() - ready < timedelta(minutes=record.spec.idle_minutes):
        # The alarm's window reaches back into the install (no jobs then): not idleness.
        # Reset it; CloudWatch fires again if the cluster is still idle when it should be.
        deps.monitor.reset_idle_alarm(cluster, "ready for less than the idle period")
        return {"cluster": cluster, "action": "reset", "state": state}
    # No data counts as idle; Slurm itself says whether it is (lsstctl.services.idle).
    check = confirm_idle(deps, record, source="alarm")
    if not check.proceed:
        # Busy, or AWS failed the question: reset the alarm; it fires again while it stays quiet.
        deps.monitor.reset_idle_alarm(cluster, check.detail[:200])
        return {
            "cluster": cluster,
            "action": "busy" if check.verdict == "busy" else "deferred",
            "state": state,
            "idle_check": check.verdict,
        }
    record = request_teardown(deps, cluster, reason="idle")
    return {"cluster": cluster, "action": "teardown", "state": record.state.value, "idle_check": check.verdict}


def budget_name(message: str) -> str:
    """AWS Budgets' SNS notifications are text with a `Budget Name: <name>` line."""
    match = _BUDGET_NAME.search(message)
    if not match:
        raise ValidationError("no 'Budget Name:' line in the budget notification", field="Message")
    return match.group(1)


def _amount(message: str, label: str) -> float | None:
    match = re.search(rf"^{label}:\s*[>=<]*\s*\$?([0-9][0-9,]*(?:\.[0-9]+)?)", message, re.MULTILINE)
    return float(match.group(1).replace(",", "")) if match else None


def at_or_over_budget(message: str) -> bool:
    """Whether the alert is for the whole budget (act) or an earlier threshold (warn).
    An alert that cannot be read is treated as the whole budget: fail safe."""
    budgeted, threshold = _amount(message, "Budgeted Amount"), _amount(message, "Alert Threshold")
    if budgeted is None or threshold is None:
        return True
    return threshold >= budgeted


def on_budget_notification(deps: Deps, message: str) -> dict[str, Any]:
    """An owner's budget (lsstctl-owner-<owner>) concerns that owner's clusters; any other
    budget routed here (the account-wide backstop) concerns every cluster. An alert at the
    budget ends them; an earlier threshold only warns their owners."""
    name = budget_name(message)
    owner = name[len(OWNER_BUDGET_PREFIX) :] if name.startswith(OWNER_BUDGET_PREFIX) else None
    act = at_or_over_budget(message)
    concerned = [
        c for c in deps.store.list_billing_clusters() if c.state in ACTIVE and (owner is None or c.owner == owner)
    ]
    for cluster in concerned:
        if act:
            request_teardown(deps, cluster.id, reason="aws_budget")
        else:
            deps.notifier.notify(
                cluster.owner,
                f"AWS Budgets: {name} passed an alert threshold",
                {"cluster": cluster.name, "cluster_id": cluster.id, "budget": name, "action": "none"},
            )
    names = [c.id for c in concerned]
    logger.info("budget notification", extra={"budget": name, "owner": owner, "clusters": names, "act": act})
    return {"budget": name, "owner": owner, "teardowns": names if act else [], "warned": [] if act else names}
