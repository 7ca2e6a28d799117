"""A clock the emulator and the cost simulation control: hours pass in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class VirtualClock:
    def __init__(self, start: datetime | None = None):
        self._now = start or datetime.now(UTC).replace(microsecond=0)
        self._lock = threading.Condition()
        self.waiting = 0  # threads blocked in wait_until (Step Functions Wait states)

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def naive(self) -> datetime:
        """The same instant as naive UTC, which is what moto's models use."""
        return self().replace(tzinfo=None)

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._lock.notify_all()
            return self._now

    def wait_until(self, deadline: datetime, still_waiting: Callable[[], bool] = lambda: True) -> None:
        """Block until this clock reaches `deadline` (or `still_waiting` turns False)."""
        with self._lock:
            self.waiting += 1
            try:
                while self._now < deadline and still_waiting():
                    self._lock.wait(0.2)
            finally:
                self.waiting -= 1
