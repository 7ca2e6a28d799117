"""WorkflowStarter on Step Functions. Execution names are deterministic, so a repeated
trigger finds the execution it already started instead of starting a second one."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient
from lsstctl.observability import logger
from lsstctl.ports import ExecutionStatus


class StepFunctionsStarter:
    client = LazyClient("stepfunctions")

    def __init__(self, client: Any = None):
        self.client = client

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        try:
            arn = self.client.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload))[
                "executionArn"
            ]
            # This line joins the request (its id is bound) to the execution's own lines.
            logger.info("workflow started", extra={"execution": arn})
            return arn
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
        return self.execution_arn(state_machine_arn, name)

    @staticmethod
    def execution_arn(state_machine_arn: str, name: str) -> str:
        return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def describe(self, execution_arn: str) -> ExecutionStatus | None:
        try:
            found = self.client.describe_execution(executionArn=execution_arn)
        except ClientError as error:
            if error.response["Error"]["Code"] in {"ExecutionDoesNotExist", "ResourceNotFound"}:
                return None
            raise
        return ExecutionStatus(status=found["status"], started_at=found["startDate"], stopped_at=found.get("stopDate"))

    def stop(self, execution_arn: str, cause: str) -> None:
        try:
            self.client.stop_execution(executionArn=execution_arn, cause=cause[:32768])
        except ClientError as error:
            if error.response["Error"]["Code"] not in {"ExecutionDoesNotExist", "ExecutionAlreadyStopped"}:
                raise
