"""The head-node side of two API routes, behind the job steps' function: cancelling a job and
reading its log's tail need a shell on the cluster's head node (SSM), which the API's role does
not have. The API invokes the function with one of its two narrow actions (the function renders
the command itself from the job's record: no script crosses the boundary), and errors come back
as the control plane's own types (the handler's classified errors, by name)."""

from __future__ import annotations

import json
from typing import Any

from lsstctl import errors as error_types
from lsstctl.adapters.aws import LazyClient
from lsstctl.errors import ControlPlaneError


class JobStepsFunction:
    client = LazyClient("lambda")

    def __init__(self, function_name: str, client: Any = None):
        self.function_name = function_name
        self.client = client

    def cancel(self, cid: str, job_id: str) -> None:
        self._invoke({"action": "cancel", "cluster": cid, "job_id": job_id})

    def tail(self, cid: str, job_id: str, lines: int) -> dict[str, Any]:
        return dict(self._invoke({"action": "log", "cluster": cid, "job_id": job_id, "lines": lines}))

    def _invoke(self, event: dict[str, Any]) -> Any:
        # (AWS's own failures of the call are classified where every error is: the route.)
        response = self.client.invoke(
            FunctionName=self.function_name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
        )
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise _error_from(body if isinstance(body, dict) else {})
        return body


def _error_from(body: dict[str, Any]) -> ControlPlaneError:
    kind = getattr(error_types, str(body.get("errorType")), None)
    message = str(body.get("errorMessage") or "the job steps' function failed")
    if (
        isinstance(kind, type)
        and issubclass(kind, ControlPlaneError)
        and not issubclass(kind, (error_types.AwsUnavailableError, error_types.AwsError))
    ):
        return kind(message)
    # An AWS failure over there, or a crash: worth a retry by the caller.
    return error_types.TransientError(f"job steps: {message}")
