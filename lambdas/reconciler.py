"""Scheduled every few minutes (EventBridge): converge what AWS has with the records, so
that no billable resource is left unwatched (lsstctl.services.reconciler)."""

from typing import Any

from lsstctl import wiring
from lsstctl.handlers import trigger_handler
from lsstctl.observability import logger
from lsstctl.services.reconciler import reconcile


def _pass(event: dict[str, Any]) -> dict[str, Any]:
    summary = reconcile(wiring.deps())
    logger.info(
        "reconciler pass",
        extra={k: v for k, v in summary.items() if k != "findings"} | {"actions": len(summary["findings"])},
    )
    return summary


lambda_handler = trigger_handler(_pass, retries="cleanup")  # its own clients, no retry quota
