"""A clock the emulator and the cost simulation control: hours pass in milliseconds."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone


class VirtualClock:
    def __init__(self, start: datetime | None = None):
        self._now = start or datetime.now(timezone.utc).replace(microsecond=0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def naive(self) -> datetime:
        """The same instant as naive UTC, which is what moto's models use."""
        return self().replace(tzinfo=None)

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
