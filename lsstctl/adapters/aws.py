"""The AWS boundary: default clients built lazily in one place, with one retry policy, and
the one classification of AWS failures.

Adapters accept a client (tests, other accounts) and otherwise build a default on first
use — never at import time, since Chalice imports the app while packaging. Creating
clients from boto3's default session is not thread-safe, and the emulator runs handlers
on many threads, hence the lock.

Retries: every client gets botocore's `standard` mode (exponential backoff with jitter and
a retry quota), or `adaptive` where bursts of calls are normal (the guard's and the
reconciler's EC2 and CloudWatch listings), with attempts chosen per service. The clean-up
functions (teardown steps, reconciler) declare the `cleanup` profile in their handler
(`retry_profile`): `legacy` mode, which has no retry quota to run dry, on clients of their own
(`lsstctl.wiring.deps` keeps one set of adapters per profile), so a burst elsewhere in the
process cannot spend their retries — on AWS, where each function is its own process, and in
the emulator, where every function shares one. Libraries that
build their own clients (ParallelCluster's validators) get the same policy through the
environment (`configure_library_retries`).

Classification: `classify` turns any failure that reached us from AWS — a `ClientError`, a
connection error, ParallelCluster's wrapped errors, Powertools' persistence errors — into
`AwsUnavailableError` (transient: throttling, 5xx, conflicts, eventual consistency right
after a create) or `AwsError` (permanent, with the AWS code kept). The API and the Lambda
handlers call it at their boundary; nothing else needs to know AWS's error codes.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from lsstctl.errors import AwsError, AwsUnavailableError, ControlPlaneError, TransientError

_lock = threading.Lock()
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    mode: str  # botocore: "standard" | "adaptive"
    max_attempts: int  # counts the first try


DEFAULT_RETRY = RetryPolicy("standard", 4)
# Per service: DynamoDB calls are cheap and on every path (more attempts); EC2 and
# CloudWatch are listed in bursts by the guard and the reconciler (adaptive slows the
# client down after throttling instead of spending its quota); IAM throttles early.
RETRY_BY_SERVICE: dict[str, RetryPolicy] = {
    "dynamodb": RetryPolicy("standard", 6),
    "ec2": RetryPolicy("adaptive", 6),
    "cloudwatch": RetryPolicy("adaptive", 5),
    "iam": RetryPolicy("standard", 6),
    "secretsmanager": RetryPolicy("standard", 5),
    "stepfunctions": RetryPolicy("standard", 5),
}


# The clean-up paths (teardown steps, the reconciler): botocore's `legacy` mode, which has no
# retry quota, so a burst of failures elsewhere in the process can never leave them without
# retries, and more attempts.
CLEANUP_RETRY = RetryPolicy("legacy", 10)
RetryProfile = Literal["default", "cleanup"]
_profile: ContextVar[RetryProfile] = ContextVar("lsstctl_retry_profile", default="default")


@contextmanager
def retry_profile(profile: RetryProfile) -> Iterator[None]:
    """Clients first built inside (and `wiring.deps()` taken inside) use this profile."""
    token = _profile.set(profile)
    try:
        yield
    finally:
        _profile.reset(token)


def current_retry_profile() -> RetryProfile:
    return _profile.get()


def retry_policy(service: str) -> RetryPolicy:
    if _profile.get() == "cleanup":
        return CLEANUP_RETRY
    return RETRY_BY_SERVICE.get(service, DEFAULT_RETRY)


def client_config(service: str) -> Any:
    from botocore.config import Config

    policy = retry_policy(service)
    # botocore's `max_attempts` counts retries only; `total_max_attempts` counts the first try.
    return Config(retries={"mode": policy.mode, "total_max_attempts": policy.max_attempts})


def configure_library_retries() -> None:
    """Clients that libraries build themselves read the policy from the environment."""
    os.environ.setdefault("AWS_RETRY_MODE", DEFAULT_RETRY.mode)
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(DEFAULT_RETRY.max_attempts))  # counts the first try too


def default_client(service: str) -> Any:
    import boto3

    with _lock:
        return boto3.client(service, config=client_config(service))


def default_resource(service: str) -> Any:
    import boto3

    with _lock:
        return boto3.resource(service, config=client_config(service))


class LazyClient:
    """Attribute holding an adapter's client: the one it was given, or a default built on
    first use."""

    def __init__(self, service: str, *, resource: bool = False):
        self._service = service
        self._resource = resource
        self._attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_lazy_{name}"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get(self._attr)
        if value is None:
            value = default_resource(self._service) if self._resource else default_client(self._service)
            obj.__dict__[self._attr] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self._attr] = value


# classification -------------------------------------------------------------------------
# botocore's own list of throttling and transient codes (retries/standard.py), plus the
# 5xx codes services use in their bodies.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
    }
)
UNAVAILABLE_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServiceException",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalServerException",
        "TransactionConflict",
        "TransactionConflictException",
    }
)
# A resource the control plane itself just created may be invisible for a few seconds
# (EC2 and SSM are eventually consistent): the next attempt finds it.
EVENTUALLY_CONSISTENT_CODES = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "InvalidVolume.NotFound",
        "InvocationDoesNotExist",
    }
)
TRANSIENT_CODES = THROTTLING_CODES | UNAVAILABLE_CODES | EVENTUALLY_CONSISTENT_CODES


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    # Libraries that wrap an error without chaining it pass it as an argument.
    for wrapper in list(seen):
        seen += [a for a in getattr(wrapper, "args", ()) if isinstance(a, BaseException) and a not in seen]
    return seen


def _client_error_code(error: BaseException) -> tuple[str, int] | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code = str(response["Error"].get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "TransactionCanceledException":
            reasons = {str(r.get("Code")) for r in response.get("CancellationReasons", []) or []}
            if reasons & TRANSIENT_CODES:
                return next(iter(reasons & TRANSIENT_CODES)), status
        return code, status
    wrapped = getattr(error, "error_code", None)  # ParallelCluster's AWSClientError
    if isinstance(wrapped, str) and wrapped:
        return wrapped, 0
    return None


def _is_connection_error(error: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - botocore is always there
        return False
    return isinstance(error, (BotoConnectionError, HTTPClientError))


def aws_failure(error: BaseException) -> tuple[str, int, str] | None:
    """(code, HTTP status, operation) of the AWS failure behind `error`, if there is one."""
    for link in _chain(error):
        if _is_connection_error(link):
            return type(link).__name__, 0, ""
        found = _client_error_code(link)
        if found:
            return found[0], found[1], str(getattr(link, "operation_name", "") or getattr(link, "function_name", ""))
    return None


def transient_code(code: str, status: int = 0) -> bool:
    """Whether an AWS answer (its error code and HTTP status) is worth retrying."""
    return (
        code in TRANSIENT_CODES
        or status >= 500
        or code.endswith(("ConnectionError", "TimeoutError", "ConnectionClosedError"))
    )


def is_transient(error: BaseException) -> bool:
    if isinstance(error, ControlPlaneError):
        return isinstance(error, TransientError)
    failure = aws_failure(error)
    return failure is not None and transient_code(failure[0], failure[1])


def classify(error: BaseException) -> ControlPlaneError | None:
    """The control plane's view of a failure that came from AWS; None if it did not."""
    if isinstance(error, ControlPlaneError):
        return error
    failure = aws_failure(error)
    if failure is None:
        return None
    code, status, operation = failure
    where = f" in {operation}" if operation else ""
    if transient_code(code, status):
        return AwsUnavailableError(
            f"AWS is unavailable or throttling ({code}{where}); retry after a pause",
            aws_code=code,
            operation=operation or None,
            retry_after_seconds=2 if code in THROTTLING_CODES else 1,
        )
    return AwsError(
        f"AWS refused a call the control plane made ({code}{where})", aws_code=code, operation=operation or None
    )


def aws_unavailable(error: BaseException) -> bool:
    """A transient failure that came from AWS (not the control plane's own "not yet")."""
    return isinstance(classify(error), AwsUnavailableError)


def retrying(
    call: Callable[[], T],
    *,
    attempts: int = 6,
    base_seconds: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Repeat a call that must not be lost to a transient failure (releasing an
    idempotency record, deleting an access key nobody can retrieve, a workflow step: see
    `lsstctl.handlers.step_handler`), with full-jitter exponential backoff."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if attempt == attempts - 1 or not retry_on(error):
                raise
            sleep(random.uniform(0, base_seconds * 2**attempt))
    raise AssertionError("unreachable")
