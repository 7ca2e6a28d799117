"""One place for Powertools Logger, Tracer and Metrics, shared by the API and the Lambdas.

Every log line carries the service name plus, where known, the cluster, the request that
started the work (the API's request id, passed on to the workflows it starts) and the Step
Functions execution (the correlation id). Secrets are never passed to the logger.
"""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "lsstctl"
NAMESPACE = "LsstControlPlane"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def bind(**keys: object) -> None:
    """Set this request's correlation keys (cluster, execution, job) for every following log
    line. Thread-local: the emulator serves many requests on threads of one process, and a
    warm Lambda must not carry one request's keys into the next."""
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(**{k: v for k, v in keys.items() if v is not None})


def request_id() -> str:
    """The request this thread works for ('' outside one): workflows started here carry it."""
    return str(logger.thread_safe_get_current_keys().get("request_id") or "")
