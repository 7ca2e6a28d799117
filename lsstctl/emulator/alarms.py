"""CloudWatch alarm evaluation, which moto does not do: the emulator evaluates the
control plane's idle alarms the way CloudWatch would (the last EvaluationPeriods periods,
missing data per TreatMissingData) and sets their state, which the glue turns into the
"CloudWatch Alarm State Change" event."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lsstctl.adapters.cloudwatch import ALARM_PREFIX


def _breaching(value: float, alarm: dict[str, Any]) -> bool:
    threshold = alarm["Threshold"]
    return {
        "LessThanOrEqualToThreshold": value <= threshold,
        "LessThanThreshold": value < threshold,
        "GreaterThanOrEqualToThreshold": value >= threshold,
        "GreaterThanThreshold": value > threshold,
    }[alarm["ComparisonOperator"]]


def evaluate_idle_alarms(cloudwatch: Any, now: datetime) -> dict[str, str]:
    """Evaluate every lsstctl idle alarm at `now`; returns the alarms whose state changed."""
    changed = {}
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=ALARM_PREFIX):
        for alarm in page["MetricAlarms"]:
            period, periods = alarm["Period"], alarm["EvaluationPeriods"]
            points = cloudwatch.get_metric_statistics(
                Namespace=alarm["Namespace"],
                MetricName=alarm["MetricName"],
                Dimensions=alarm["Dimensions"],
                StartTime=now - timedelta(seconds=period * periods),
                EndTime=now,
                Period=period,
                Statistics=[alarm["Statistic"]],
            )["Datapoints"]
            by_period = {int(p["Timestamp"].timestamp()) // period: p[alarm["Statistic"]] for p in points}
            first = int(now.timestamp()) // period - periods + 1
            missing_breaches = alarm.get("TreatMissingData", "missing") == "breaching"
            breaching = [
                _breaching(by_period[slot], alarm) if slot in by_period else missing_breaches
                for slot in range(first, first + periods)
            ]
            state = "ALARM" if sum(breaching) >= alarm.get("DatapointsToAlarm", periods) else "OK"
            if state != alarm["StateValue"]:
                cloudwatch.set_alarm_state(
                    AlarmName=alarm["AlarmName"],
                    StateValue=state,
                    StateReason=f"emulator evaluation at {now.isoformat()}",
                )
                changed[alarm["AlarmName"]] = state
    return changed
