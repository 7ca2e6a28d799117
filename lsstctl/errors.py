"""Domain exceptions, each mapped once to an HTTP status (chalice_app) and, by class
name, to a Step Functions error name (Retry/Catch in statemachines/ match on these).

Failures of AWS itself are classified once, at the AWS boundary
(`lsstctl.adapters.aws.classify`): transient ones become `AwsUnavailableError` (503 with
Retry-After; retried by the workflows), permanent ones `AwsError` (502, the AWS code kept).
A generic 500 (`internal_error`) is left for real bugs."""

from __future__ import annotations

from typing import Any


class ControlPlaneError(Exception):
    """Base class. `code` is the stable machine-readable name returned to API callers."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationError(ControlPlaneError):
    code = "validation_error"
    http_status = 400


class ClusterConfigError(ValidationError):
    """ParallelCluster's own schema or validators rejected the rendered config."""

    code = "invalid_cluster_config"


class ForbiddenError(ControlPlaneError):
    code = "forbidden"
    http_status = 403


class UnauthenticatedError(ControlPlaneError):
    code = "unauthenticated"
    http_status = 401


class NotFoundError(ControlPlaneError):
    code = "not_found"
    http_status = 404


class QuotaExceededError(ControlPlaneError):
    """The owner's quota (set by admins) does not allow this; details say which limit."""

    code = "quota_exceeded"
    http_status = 403


class ConflictError(ControlPlaneError):
    code = "conflict"
    http_status = 409


class InvalidTransitionError(ConflictError):
    """A lifecycle transition lost a race or is not allowed from the current state."""

    code = "invalid_transition"


class IdempotencyKeyReuseError(ControlPlaneError):
    code = "idempotency_key_reused"
    http_status = 422


class RequestInProgressError(ConflictError):
    """Only while the first request with this key really runs: a failed one releases it."""

    code = "request_in_progress"
    retry_after_seconds = 2


class RateLimitedError(ControlPlaneError):
    """The owner sent more mutating requests this minute than the control plane admits."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after_seconds: int, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


class TransientError(ControlPlaneError):
    """Worth retrying: throttling, a command still being delivered, eventual consistency.
    API callers get 503 with Retry-After; the workflows' Retry matches the class name."""

    code = "temporarily_unavailable"
    http_status = 503
    retry_after_seconds = 1


class AwsUnavailableError(TransientError):
    """AWS answered with throttling, a 5xx or a connection failure, and the SDK's own
    retries gave up. Nothing about the request was wrong: retry it after a pause."""

    code = "aws_unavailable"

    def __init__(
        self,
        message: str,
        *,
        aws_code: str | None = None,
        operation: str | None = None,
        retry_after_seconds: int | None = None,
    ):
        super().__init__(message, details={k: v for k, v in (("aws_code", aws_code), ("operation", operation)) if v})
        self.aws_code = aws_code
        self.operation = operation
        if retry_after_seconds is not None:
            self.retry_after_seconds = retry_after_seconds


class AwsError(ControlPlaneError):
    """AWS refused a call for good (AccessDenied, a malformed request the control plane
    made, a missing resource it relied on): not the caller's fault, not worth a retry."""

    code = "aws_error"
    http_status = 502

    def __init__(self, message: str, *, aws_code: str | None = None, operation: str | None = None):
        super().__init__(message, details={k: v for k, v in (("aws_code", aws_code), ("operation", operation)) if v})
        self.aws_code = aws_code
        self.operation = operation


class ChatDeliveryError(ControlPlaneError):
    """Slack refused a message for good (a revoked webhook, an expired response URL)."""

    code = "chat_delivery_failed"
    http_status = 502


class LaunchFailedError(ControlPlaneError):
    code = "launch_failed"


class InstallFailedError(ControlPlaneError):
    code = "install_failed"


class PollTimeoutError(ControlPlaneError):
    code = "poll_timeout"


class JobSubmitError(ControlPlaneError):
    code = "job_submit_failed"


class ArchiveFailedError(ControlPlaneError):
    code = "archive_failed"


class TeardownFailedError(ControlPlaneError):
    code = "teardown_failed"


# Step Functions: a step failing with one of these ends at once (its Catch leads to cleanup);
# anything else — transient, or unknown such as a Lambda killed mid-step — is retried with
# backoff (statemachines/*.asl.json, checked by tests/infra).
PERMANENT_STEP_ERRORS = tuple(
    sorted(
        {
            ValidationError.__name__,
            ClusterConfigError.__name__,
            NotFoundError.__name__,
            ConflictError.__name__,
            InvalidTransitionError.__name__,
            LaunchFailedError.__name__,
            InstallFailedError.__name__,
            PollTimeoutError.__name__,
            JobSubmitError.__name__,
            ArchiveFailedError.__name__,
            TeardownFailedError.__name__,
            AwsError.__name__,
            ChatDeliveryError.__name__,
        }
    )
)
