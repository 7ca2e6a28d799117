"""Scheduled every minute (EventBridge): meter every cluster, end those over budget,
past their lifetime, or idle. Invoked by itself with {"guard_shard": ...}: one share of a
pass over more clusters than one invocation meters (lsstctl.services.costs.guard_tick)."""

from typing import Any

from lsstctl import wiring
from lsstctl.handlers import trigger_handler
from lsstctl.observability import logger
from lsstctl.services.costs import guard_tick


def _tick(event: dict[str, Any]) -> dict[str, Any]:
    summary = guard_tick(wiring.deps(), shard=event.get("guard_shard"))
    logger.info("guard tick", extra=summary)
    return summary


lambda_handler = trigger_handler(_tick)
