"""One place for Powertools Logger, Tracer and Metrics, shared by the API and the Lambdas.

Every log line carries the service name plus, where known, the cluster, the request that
started the work (the API's request id) and, in a Lambda, the function, its invocation and
the Step Functions execution (the correlation id). All of these keys are the thread's own:
on Lambda each invocation has its process, but the emulator runs many invocations and API
requests at once on threads of one process, and no line may carry another's keys.
Secrets are never passed to the logger.

Tracing: Powertools' Tracer (and the X-Ray SDK it imports, about 0.3 s of every cold start)
is built only where tracing is on: in a Lambda whose POWERTOOLS_TRACE_DISABLED is not true
(the template's `TraceHandlers` parameter). Elsewhere its decorators leave functions as they are.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics

SERVICE = "lsstctl"
NAMESPACE = "LsstControlPlane"


def tracing_on() -> bool:
    """Tracing inside the function: in a Lambda, unless POWERTOOLS_TRACE_DISABLED says no."""
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in {"1", "true", "yes", "on"}
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and not disabled


class LazyTracer:
    """The two decorators of Powertools' Tracer we use; the Tracer itself (and the X-Ray SDK)
    only when tracing is on, built at the first decoration."""

    def __init__(self, service: str):
        self._service = service
        self._tracer: Any = None

    def _real(self) -> Any:
        if self._tracer is None:
            from aws_lambda_powertools import Tracer

            self._tracer = Tracer(service=self._service)
        return self._tracer

    def capture_lambda_handler(self, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if tracing_on():
            return self._real().capture_lambda_handler(**options)  # type: ignore[no-any-return]
        return lambda handler: handler

    def capture_method(self, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if tracing_on():
            return self._real().capture_method(**options)  # type: ignore[no-any-return]
        return lambda method: method


logger = Logger(service=SERVICE)
tracer = LazyTracer(SERVICE)
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
