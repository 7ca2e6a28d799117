"""Idle detection on CloudWatch: the head node publishes its Slurm queue depth; a
per-cluster alarm fires after the cluster's idle minutes with no jobs (missing data — a
dead head node — counts as idle). The alarm's state change reaches EventBridge by itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient
from lsstctl.domain.scripts import QUEUE_DEPTH_METRIC as METRIC
from lsstctl.domain.scripts import queue_depth_namespace
from lsstctl.ports import QueueDepth

ALARM_PREFIX = "lsstctl-idle-"


def alarm_name(cluster: str) -> str:
    return f"{ALARM_PREFIX}{cluster}"


class CloudWatchMonitor:
    cloudwatch = LazyClient("cloudwatch")

    def __init__(self, cloudwatch: Any = None):
        self.cloudwatch = cloudwatch

    def ensure_idle_alarm(self, cluster: str, idle_minutes: int) -> None:
        """Create or update (put_metric_alarm converges on the name)."""
        self.cloudwatch.put_metric_alarm(
            AlarmName=alarm_name(cluster),
            AlarmDescription=f"Cluster {cluster} has had no pending or running Slurm job for {idle_minutes} minutes",
            Namespace=queue_depth_namespace(cluster),
            MetricName=METRIC,
            Dimensions=[{"Name": "Cluster", "Value": cluster}],
            Statistic="Maximum",
            Period=60,
            EvaluationPeriods=idle_minutes,
            DatapointsToAlarm=idle_minutes,
            Threshold=0,
            ComparisonOperator="LessThanOrEqualToThreshold",
            TreatMissingData="breaching",
            Tags=[{"Key": "lsstctl:cluster", "Value": cluster}],
        )

    def reset_idle_alarm(self, cluster: str, reason: str) -> None:
        """Back to OK: CloudWatch evaluates again and fires anew if the cluster is still idle."""
        try:
            self.cloudwatch.set_alarm_state(AlarmName=alarm_name(cluster), StateValue="OK", StateReason=reason[:1000])
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFound":
                raise

    def delete_idle_alarm(self, cluster: str) -> None:
        try:
            self.cloudwatch.delete_alarms(AlarmNames=[alarm_name(cluster)])
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFound":
                raise

    def list_idle_alarms(self) -> list[str]:
        """The clusters that have an idle alarm (one paginated call)."""
        pages = self.cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=ALARM_PREFIX)
        return [a["AlarmName"][len(ALARM_PREFIX) :] for page in pages for a in page.get("MetricAlarms", [])]

    def max_queue_depth(self, cluster: str, start: datetime, end: datetime) -> float | None:
        """Highest queue depth published in [start, end]; None when nothing was published."""
        result = self.cloudwatch.get_metric_statistics(
            Namespace=queue_depth_namespace(cluster),
            MetricName=METRIC,
            Dimensions=[{"Name": "Cluster", "Value": cluster}],
            StartTime=start,
            EndTime=end,
            Period=60,
            Statistics=["Maximum"],
        )
        points = [p["Maximum"] for p in result.get("Datapoints", [])]
        return max(points) if points else None

    def queue_depths(self, windows: dict[str, tuple[datetime, datetime]]) -> dict[str, QueueDepth]:
        """Each cluster's queue depth over its window (peak, last busy minute): GetMetricData,
        500 metrics a call, one call per distinct window in each page (the guard's clusters
        share few)."""
        found: dict[str, QueueDepth] = {}
        by_window: dict[tuple[datetime, datetime], list[str]] = {}
        for cluster, window in windows.items():
            by_window.setdefault(window, []).append(cluster)
        for (start, end), clusters in by_window.items():
            for first in range(0, len(clusters), 500):
                page = clusters[first : first + 500]
                queries = [
                    {
                        "Id": f"q{i}",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": queue_depth_namespace(cluster),
                                "MetricName": METRIC,
                                "Dimensions": [{"Name": "Cluster", "Value": cluster}],
                            },
                            "Period": 60,
                            "Stat": "Maximum",
                        },
                        "ReturnData": True,
                    }
                    for i, cluster in enumerate(page)
                ]
                points: dict[str, list[tuple[datetime, float]]] = {}
                kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end}
                while True:
                    answer = self.cloudwatch.get_metric_data(**kwargs)
                    for result in answer.get("MetricDataResults", []):
                        answered = zip(result.get("Timestamps", []), result.get("Values", []), strict=True)
                        points.setdefault(result["Id"], []).extend(answered)
                    if not answer.get("NextToken"):
                        break
                    kwargs["NextToken"] = answer["NextToken"]
                for i, cluster in enumerate(page):
                    series = points.get(f"q{i}", [])
                    busy = [at for at, value in series if value > 0]
                    found[cluster] = QueueDepth(
                        peak=max(value for _, value in series) if series else None,
                        busy_at=max(busy) if busy else None,
                    )
        return found

    def publish_queue_depth(self, cluster: str, depth: int, at: datetime) -> None:
        """What the head node's publisher sends (used by the emulator and the simulation)."""
        self.cloudwatch.put_metric_data(
            Namespace=queue_depth_namespace(cluster),
            MetricData=[
                {
                    "MetricName": METRIC,
                    "Dimensions": [{"Name": "Cluster", "Value": cluster}],
                    "Timestamp": at,
                    "Value": float(depth),
                    "Unit": "Count",
                }
            ],
        )
