"""A Lambda handler that records what it receives (for the EventBridge delivery test)."""

from typing import Any

RECEIVED: list[Any] = []


def lambda_handler(event: Any, context: Any) -> dict[str, bool]:
    RECEIVED.append(event)
    return {"ok": True}
