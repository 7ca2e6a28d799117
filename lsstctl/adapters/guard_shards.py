"""A share of the guard's pass, sent to the guard's own function as an asynchronous
invocation (Lambda queues it and runs it at once, concurrently with the others)."""

from __future__ import annotations

import json
from typing import Any

from lsstctl.adapters.aws import LazyClient


class LambdaGuardShards:
    lambda_ = LazyClient("lambda")

    def __init__(self, function_name: str, client: Any = None):
        self.function_name = function_name
        self.lambda_ = client

    def dispatch(self, share: dict[str, Any]) -> None:
        self.lambda_.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps({"guard_shard": share}).encode(),
        )
