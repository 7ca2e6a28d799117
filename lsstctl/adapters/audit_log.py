"""The audit trail in CloudWatch Logs: append-only by construction.

A log event cannot be changed once written, and the control plane's roles may only add to
the audit log group (`logs:CreateLogStream`, `logs:PutLogEvents` on that group); none may
delete it, its streams or its events, or shorten its retention (the template grants no
such action on it, and a test keeps it so). The API's role may also read it
(`logs:FilterLogEvents`), for admins' `GET /audit`.

One stream per writer and day (`2026/12/06/lsstctl-guard`): writers never contend for a
stream. Each event is one JSON object (lsstctl.services.audit).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient

MAX_EVENT_BYTES = 200_000  # CloudWatch Logs takes up to 256 KiB per event


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class CloudWatchAuditLog:
    logs = LazyClient("logs")

    def __init__(self, group: str, logs: Any = None, writer: str | None = None):
        self._group = group
        self.logs = logs
        self._writer = writer or os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "lsstctl"
        self._streams: set[str] = set()
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        """Add one entry. Its event's time is the time of writing (CloudWatch Logs refuses
        events more than two hours ahead or two weeks behind); the entry says when it happened."""
        if not self._group:
            return
        at = datetime.now(UTC)
        message = json.dumps(entry, sort_keys=True, default=str)[:MAX_EVENT_BYTES]
        stream = f"{at:%Y/%m/%d}/{self._writer}"
        self._ensure_stream(stream)
        try:
            self._put(stream, at, message)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            with self._lock:  # the stream went (a new day's, or a test's fresh account)
                self._streams.discard(stream)
            self._ensure_stream(stream)
            self._put(stream, at, message)

    def read(
        self, start: datetime, end: datetime, *, token: str | None = None, limit: int = 1000
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Entries written in [start, end) (the times they were written), a page at a time."""
        if not self._group:
            return [], None
        kwargs: dict[str, Any] = {
            "logGroupName": self._group,
            "startTime": _ms(start),
            "endTime": _ms(end) - 1,
            "limit": max(1, min(limit, 10_000)),
        }
        if token:
            kwargs["nextToken"] = token
        try:
            page = self.logs.filter_log_events(**kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return [], None
            raise
        entries = []
        for event in page.get("events", []):
            try:
                entries.append(json.loads(event["message"]))
            except ValueError:
                entries.append({"unreadable": event["message"][:500]})
        return entries, page.get("nextToken")

    def _put(self, stream: str, at: datetime, message: str) -> None:
        answer = self.logs.put_log_events(
            logGroupName=self._group,
            logStreamName=stream,
            logEvents=[{"timestamp": _ms(at), "message": message}],
        )
        rejected = answer.get("rejectedLogEventsInfo")
        if rejected:
            raise RuntimeError(f"CloudWatch Logs refused the audit entry: {rejected}")

    def _ensure_stream(self, stream: str) -> None:
        with self._lock:
            if stream in self._streams:
                return
        try:
            self.logs.create_log_stream(logGroupName=self._group, logStreamName=stream)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
        with self._lock:
            self._streams.add(stream)
