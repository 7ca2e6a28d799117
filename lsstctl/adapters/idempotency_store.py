"""Powertools' DynamoDB idempotency store, made safe for a control plane on AWS's bad days.

A request that fails must release its record, and one that succeeded must mark it done:
otherwise every retry with the same Idempotency-Key answers `request_in_progress` for as
long as the record lives. Both writes are therefore repeated on transient failures (see
`aws.retrying`), and an in-progress record expires after `IN_PROGRESS_SECONDS` — longer
than any API request may run (API Gateway gives up after 29 s) — so that even a process
killed mid-request cannot strand a key.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from lsstctl.adapters.aws import retrying

IN_PROGRESS_SECONDS = 60


class IdempotencyStore(DynamoDBPersistenceLayer):
    def _update_record(self, data_record: Any) -> None:
        retrying(lambda: super(IdempotencyStore, self)._update_record(data_record))

    def _delete_record(self, data_record: Any) -> None:
        retrying(lambda: super(IdempotencyStore, self)._delete_record(data_record))

    @staticmethod
    def request_context(lambda_context: Any) -> RequestDeadline:
        return RequestDeadline(lambda_context)


class RequestDeadline:
    """What Powertools asks of a Lambda context to expire an in-progress record: the time
    this request may still run, never more than IN_PROGRESS_SECONDS."""

    def __init__(self, context: Any = None, cap_seconds: int = IN_PROGRESS_SECONDS):
        self._context = context
        self._cap_ms = cap_seconds * 1000

    def get_remaining_time_in_millis(self) -> int:
        remaining = self._context.get_remaining_time_in_millis() if self._context is not None else self._cap_ms
        return max(0, min(int(remaining), self._cap_ms))
