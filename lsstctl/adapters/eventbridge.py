"""EventPublisher on EventBridge: every lifecycle transition becomes an event."""

from __future__ import annotations

import json
from typing import Any

from lsstctl.adapters.aws import LazyClient

SOURCE = "lsstctl"


class EventBridgePublisher:
    client = LazyClient("events")

    def __init__(self, bus_name: str, client: Any = None):
        self._bus = bus_name
        self.client = client

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        response = self.client.put_events(
            Entries=[
                {"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": self._bus}
            ]
        )
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge rejected {detail_type}: {response['Entries']}")
