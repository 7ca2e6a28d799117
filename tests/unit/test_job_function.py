"""The API's way to a head node (cancel, a job's log): the job steps' function, invoked with one
of its two narrow actions; its errors come back as the control plane's own."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from lambdas import job_steps
from lsstctl.adapters.job_function import JobStepsFunction
from lsstctl.emulator.glue import LambdaContext
from lsstctl.errors import ConflictError, TransientError, ValidationError


class Lambda:
    def __init__(self, answer: Any, error: str | None = None):
        self.answer, self.error, self.calls = answer, error, []

    def invoke(self, **call: Any) -> dict[str, Any]:
        self.calls.append({**call, "Payload": json.loads(call["Payload"])})
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.answer).encode())}
        if self.error:
            response["FunctionError"] = self.error
        return response


def test_the_log_and_cancel_are_the_functions_own_actions_with_data_only():
    log = {"job_id": "j-1", "state": "running", "archive_uri": "s3://a/x/", "source": "head node", "lines": ["hi"]}
    client = Lambda(log)
    steps = JobStepsFunction("lsstctl-job-steps", client)
    assert steps.tail("demo-2bd806c97f", "j-1", 20) == log
    steps.cancel("demo-2bd806c97f", "j-1")
    assert [c["Payload"] for c in client.calls] == [
        {"action": "log", "cluster": "demo-2bd806c97f", "job_id": "j-1", "lines": 20},
        {"action": "cancel", "cluster": "demo-2bd806c97f", "job_id": "j-1"},
    ]
    assert {c["FunctionName"] for c in client.calls} == {"lsstctl-job-steps"}
    assert {c["InvocationType"] for c in client.calls} == {"RequestResponse"}


def test_the_job_steps_function_serves_those_actions():
    # Asked for an action it lacks, the handler names the ones it has (lambdas/job_steps.py).
    with pytest.raises(ValidationError) as refused:
        job_steps.lambda_handler(
            {"action": "shell", "cluster": "demo-2bd806c97f", "job_id": "j-1"},
            LambdaContext(function_name="lsstctl-job-steps", invoked_function_arn="arn:test"),
        )
    assert "'cancel'" in refused.value.message and "'log'" in refused.value.message


@pytest.mark.parametrize(
    "error_type, expected",
    [
        ("ConflictError", ConflictError),
        ("TransientError", TransientError),
        ("AwsUnavailableError", TransientError),
        ("KeyError", TransientError),
    ],
)
def test_the_functions_errors_come_back_as_the_control_planes(error_type, expected):
    steps = JobStepsFunction(
        "f", Lambda({"errorType": error_type, "errorMessage": "cluster 'demo' is deleted"}, "Unhandled")
    )
    with pytest.raises(expected, match="cluster 'demo' is deleted"):
        steps.cancel("demo-2bd806c97f", "j-1")
