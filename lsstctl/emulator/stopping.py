"""One way to stop whatever runs the emulator (serve, the benches): SIGTERM, SIGINT and
SIGHUP all raise Stop in the main thread, so its `finally` stops the API, the scheduler,
the executions, Slurm and munge — never a process killed with its daemons left running."""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stop(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt: no `except
    Exception` on the way (a handler running in this thread) may swallow it."""


_stopping: list[int] = []


def raise_stop(signum: int, frame: Any) -> None:
    # One stop at a time: further signals change nothing while the first is handled.
    if _stopping:
        return
    _stopping.append(signum)
    raise Stop(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """From now on every stop signal raises Stop in the main thread."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_stop)
