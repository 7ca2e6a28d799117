"""One place for Powertools Logger, Tracer and Metrics, shared by the API and the Lambdas.

Every log line carries the service name plus, where known, the cluster and the Step
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
    """Add correlation keys (cluster, execution, job) to every following log line."""
    logger.append_keys(**{k: v for k, v in keys.items() if v is not None})
