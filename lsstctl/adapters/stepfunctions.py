"""WorkflowStarter on Step Functions. Execution names are deterministic, so a repeated
trigger finds the execution it already started instead of starting a second one."""
from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient


class StepFunctionsStarter:
    client = LazyClient("stepfunctions")

    def __init__(self, client: Any = None):
        self.client = client

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        try:
            return self.client.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
            )["executionArn"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
        return self.execution_arn(state_machine_arn, name)

    @staticmethod
    def execution_arn(state_machine_arn: str, name: str) -> str:
        return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
