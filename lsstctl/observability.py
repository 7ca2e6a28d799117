"""One place for Powertools Logger, Tracer and Metrics, shared by the API and the Lambdas.

Every log line carries the service name plus, where known, the cluster, the request that
started the work (the API's request id) and, in a Lambda, the function, its invocation and
the Step Functions execution (the correlation id). All of these keys are the thread's own:
on Lambda each invocation has its process, but the emulator runs many invocations and API
requests at once on threads of one process, and no line may carry another's keys.
Secrets are never passed to the logger.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "lsstctl"
NAMESPACE = "LsstControlPlane"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

_bound = threading.local()
_cold = [True]


def bind(**keys: object) -> None:
    """Set this request's correlation keys (cluster, request, job) for every following log
    line of this thread, replacing those the last bind() set (an invocation's own keys stay)."""
    previous = getattr(_bound, "keys", ())
    if previous:
        logger.thread_safe_remove_keys(previous)
    values = {k: v for k, v in keys.items() if v is not None}
    logger.thread_safe_append_keys(**values)
    _bound.keys = tuple(values)


def bind_more(**keys: object) -> None:
    """Add keys to this request's (the caller, once known), leaving those bound before."""
    values = {k: v for k, v in keys.items() if v is not None}
    logger.thread_safe_append_keys(**values)
    _bound.keys = tuple(dict.fromkeys((*getattr(_bound, "keys", ()), *values)))


def current_keys() -> dict[str, Any]:
    """The keys this thread's log lines carry now (caller, request, function...)."""
    return dict(logger.thread_safe_get_current_keys())


def request_id() -> str:
    """The request this thread works for ('' outside one): workflows started here carry it."""
    return str(logger.thread_safe_get_current_keys().get("request_id") or "")


def invocation_context(correlation_id_path: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """What Powertools' inject_lambda_context adds to every line (function, invocation,
    cold start, correlation id), kept per thread: Powertools keeps them process-wide."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def run(event: Any, context: Any) -> Any:
            import jmespath

            cold, _cold[0] = _cold[0], False
            keys = {
                "function_name": getattr(context, "function_name", None),
                "function_memory_size": getattr(context, "memory_limit_in_mb", None),
                "function_arn": getattr(context, "invoked_function_arn", None),
                "function_request_id": getattr(context, "aws_request_id", None),
                "cold_start": cold,
            }
            if correlation_id_path and isinstance(event, dict):
                keys["correlation_id"] = jmespath.search(correlation_id_path, event)
            logger.thread_safe_clear_keys()
            _bound.keys = ()
            logger.thread_safe_append_keys(**{k: v for k, v in keys.items() if v is not None})
            try:
                return handler(event, context)
            finally:
                logger.thread_safe_clear_keys()
                _bound.keys = ()

        return run

    return decorate
