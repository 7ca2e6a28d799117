"""Owner notifications (spend warnings, teardowns that need attention) on SNS."""

from __future__ import annotations

import json
from typing import Any

from lsstctl.adapters.aws import LazyClient


class SnsNotifier:
    sns = LazyClient("sns")

    def __init__(self, topic_arn: str, sns: Any = None):
        self._topic = topic_arn
        self.sns = sns

    def notify(self, owner: str, subject: str, detail: dict[str, Any]) -> None:
        if not self._topic:
            return
        self.sns.publish(
            TopicArn=self._topic,
            Subject=subject[:100],
            Message=json.dumps({"owner": owner, "subject": subject, **detail}),
            MessageAttributes={"owner": {"DataType": "String", "StringValue": owner}},
        )
