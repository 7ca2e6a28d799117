"""The engine behind its own Lambda: ParallelCluster's library (about 180 MB, with CDK and
Node.js for create) lives in one function on ParallelCluster's layer; every other function
reaches it through `FunctionClusterEngine`, a ClusterEngine and ConfigValidator that
invokes that function, and stays small.

The envelope is ours: {"operation": ..., "name": ..., "config": ...} in, {"result": ...}
or {"error": {"type", "message", "details", ...}} out, so that the control plane's errors
(ClusterConfigError with every validator message, AwsUnavailableError, AwsError) cross the
function boundary whole instead of as Lambda's untyped FunctionError.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from lsstctl import errors as error_types
from lsstctl.adapters.aws import LazyClient, classify
from lsstctl.errors import ControlPlaneError
from lsstctl.ports import EngineCluster

ENGINE_OPERATIONS = frozenset(
    {
        "create_cluster",
        "describe_cluster",
        "list_clusters",
        "stop_compute_fleet",
        "stop_head_node",
        "start_head_node",
        "delete_cluster",
        "validate",
    }
)


def _error_envelope(error: ControlPlaneError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type(error).__name__,
        "message": error.message,
        "field": error.field,
        "details": error.details,
    }
    for extra in ("aws_code", "operation", "retry_after_seconds"):
        if hasattr(error, extra):
            body[extra] = getattr(error, extra)
    return {"error": body}


def _error_from(body: dict[str, Any]) -> ControlPlaneError:
    kind = getattr(error_types, str(body.get("type")), None)
    message = str(body.get("message") or "cluster engine failed")
    if not (isinstance(kind, type) and issubclass(kind, ControlPlaneError)):
        return ControlPlaneError(f"cluster engine: {message}")
    if issubclass(kind, (error_types.AwsUnavailableError, error_types.AwsError)):
        extra = (
            {"retry_after_seconds": body.get("retry_after_seconds")}
            if issubclass(kind, error_types.AwsUnavailableError)
            else {}
        )
        return kind(message, aws_code=body.get("aws_code"), operation=body.get("operation"), **extra)
    return kind(message, field=body.get("field"), details=body.get("details"))


def serve(engine: Any, validator: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The engine function's side: run one operation, answer in the envelope."""
    operation = request.get("operation")
    if operation not in ENGINE_OPERATIONS:
        return _error_envelope(
            error_types.ValidationError(
                f"unknown engine operation {operation!r}; expected one of {sorted(ENGINE_OPERATIONS)}",
                field="operation",
            )
        )
    try:
        if operation == "list_clusters":
            return {"result": [asdict(c) for c in engine.list_clusters()]}
        if operation == "validate":
            return {"result": validator.validate(request["name"], request["config"])}
        if operation == "create_cluster":
            return {"result": asdict(engine.create_cluster(request["name"], request["config"]))}
        return {"result": asdict(getattr(engine, operation)(request["name"]))}
    except Exception as raised:
        mapped = classify(raised)
        if mapped is None:
            raise  # a bug: the function fails, its log has the trace
        return _error_envelope(mapped)


class FunctionClusterEngine:
    """ClusterEngine and ConfigValidator for every function but the engine's own."""

    lambda_ = LazyClient("lambda")

    def __init__(self, function_name: str, *, client: Any = None):
        self._function = function_name
        self.lambda_ = client

    def _invoke(self, operation: str, **fields: Any) -> Any:
        response = self.lambda_.invoke(
            FunctionName=self._function,
            InvocationType="RequestResponse",
            Payload=json.dumps({"operation": operation, **fields}).encode(),
        )
        payload = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            # Killed, timed out or a bug: retried like any transient failure, then teardown.
            raise error_types.AwsUnavailableError(
                f"cluster engine function failed in {operation}: {str(payload)[:300]}", operation=operation
            )
        if "error" in payload:
            raise _error_from(payload["error"])
        return payload["result"]

    def create_cluster(self, name: str, config: dict[str, Any]) -> EngineCluster:
        return EngineCluster(**self._invoke("create_cluster", name=name, config=config))

    def describe_cluster(self, name: str) -> EngineCluster:
        return EngineCluster(**self._invoke("describe_cluster", name=name))

    def list_clusters(self) -> list[EngineCluster]:
        return [EngineCluster(**c) for c in self._invoke("list_clusters")]

    def stop_compute_fleet(self, name: str) -> EngineCluster:
        return EngineCluster(**self._invoke("stop_compute_fleet", name=name))

    def stop_head_node(self, name: str) -> EngineCluster:
        return EngineCluster(**self._invoke("stop_head_node", name=name))

    def start_head_node(self, name: str) -> EngineCluster:
        return EngineCluster(**self._invoke("start_head_node", name=name))

    def delete_cluster(self, name: str) -> EngineCluster:
        return EngineCluster(**self._invoke("delete_cluster", name=name))

    def validate(self, name: str, config: dict[str, Any]) -> list[str]:
        return list(self._invoke("validate", name=name, config=config))
