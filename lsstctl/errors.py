"""Domain exceptions, each mapped once to an HTTP status (chalice_app) and, by class
name, to a Step Functions error name (Retry/Catch in statemachines/ match on these)."""
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
    code = "request_in_progress"


class TransientError(ControlPlaneError):
    """Worth retrying: throttling, a command still being delivered, eventual consistency."""

    code = "transient"
    http_status = 503


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
