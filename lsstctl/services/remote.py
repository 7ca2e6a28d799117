"""Helpers for head-node commands: short ones are awaited in-process, long ones polled
by the state machine."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from lsstctl.adapters.aws import retrying
from lsstctl.domain.lifecycle import next_poll_seconds
from lsstctl.domain.models import from_iso, iso
from lsstctl.errors import PollTimeoutError, TransientError
from lsstctl.ports import CommandResult
from lsstctl.services.deps import Deps

FAILED_STATUSES = {
    "Failed",
    "TimedOut",
    "Cancelled",
    "Undeliverable",
    "Terminated",
    "DeliveryTimedOut",
    "ExecutionTimedOut",
}


T = TypeVar("T")


def converging(deps: Deps, call: Callable[[], T]) -> T:
    """An engine call that reads before it acts (describe; describe then stop or delete) and
    converges: a transient failure retries the call inside the step (5 tries, about 15 s at
    most) before the step itself fails into the workflow's own retries. A step that makes
    many AWS calls would otherwise fail most attempts on a bad day and could spend them all."""
    return retrying(call, attempts=5, base_seconds=1.0, sleep=deps.sleep)


def run_short(deps: Deps, instance_id: str, script: str, *, comment: str) -> CommandResult:
    """Send a command expected to finish in seconds and wait for it here (sbatch, scontrol)."""
    command_id = deps.runner.send(instance_id, script, comment=comment, timeout_seconds=120)
    return wait_short(deps, command_id, instance_id, comment=comment)


def wait_short(deps: Deps, command_id: str, instance_id: str, *, comment: str) -> CommandResult:
    """Wait here for a command expected to finish in seconds (`short_command_seconds`);
    TransientError if it has not."""
    waited = 0.0
    step = 0.1
    while True:
        try:
            result = deps.runner.result(command_id, instance_id)
            if result.done:
                return result
        except TransientError:
            pass
        if waited >= deps.settings.short_command_seconds:
            raise TransientError(f"head node command '{comment}' did not finish in {waited:.0f}s")
        deps.sleep(step)
        waited += step
        step = min(step * 2, 1.0)


def tail(text: str, chars: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


def deadline_after(deps: Deps, seconds: int) -> str:
    return (deps.clock() + timedelta(seconds=seconds)).isoformat()


def paced(deps: Deps, result: dict[str, Any], since: str | None, *, most: int | None = None) -> dict[str, Any]:
    """A start or poll step's answer with the pace of the next poll: `since`, when the waiting
    began (the first step of a wait passes None; later polls pass it back), and `wait`, the
    seconds the workflow's Wait state waits before the next poll (at most `most`, else
    `poll_max_seconds`)."""
    now = deps.clock()
    began = from_iso(since) if since else now
    s = deps.settings
    wait = next_poll_seconds((now - began).total_seconds(), s.poll_seconds, most or s.poll_max_seconds)
    return {**result, "since": iso(began), "wait": wait}


def check_deadline(deps: Deps, deadline: str | None, what: str) -> None:
    from datetime import datetime

    if deadline and deps.clock() > datetime.fromisoformat(deadline):
        raise PollTimeoutError(f"{what} did not finish before {deadline}")


def error_message(error: dict[str, Any] | None) -> tuple[str, str]:
    """(code, message) from a Step Functions Catch result {"Error", "Cause"}."""
    if not error:
        return "unknown", "unknown error"
    code = str(error.get("Error", "unknown"))
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        message = parsed.get("errorMessage") or cause
    except (ValueError, AttributeError):
        message = cause
    return code, tail(str(message), 1000)
