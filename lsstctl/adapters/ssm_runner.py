"""RemoteRunner on SSM Run Command: AWS-RunShellScript, or a document of the control plane's own."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient
from lsstctl.errors import TransientError
from lsstctl.ports import CommandResult


class SsmRunner:
    client = LazyClient("ssm")

    def __init__(self, client: Any = None):
        self.client = client

    def send(self, instance_id: str, script: str, *, comment: str, timeout_seconds: int = 3600) -> str:
        response = self.client.send_command(
            InstanceIds=[instance_id],
            DocumentName="AWS-RunShellScript",
            Comment=comment[:100],
            TimeoutSeconds=timeout_seconds,
            Parameters={"commands": [script], "executionTimeout": [str(timeout_seconds)]},
        )
        return response["Command"]["CommandId"]

    def run_document(
        self, instance_id: str, document: str, parameters: dict[str, str], *, comment: str, timeout_seconds: int = 120
    ) -> str:
        """Run one of the control plane's own Command documents (a fixed script: a role may
        be allowed that document and not AWS-RunShellScript)."""
        response = self.client.send_command(
            InstanceIds=[instance_id],
            DocumentName=document,
            Comment=comment[:100],
            TimeoutSeconds=timeout_seconds,
            Parameters={k: [v] for k, v in parameters.items()},
        )
        return response["Command"]["CommandId"]

    def result(self, command_id: str, instance_id: str) -> CommandResult:
        try:
            inv = self.client.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as error:
            # Right after send_command the invocation may not exist yet (eventual consistency).
            if error.response["Error"]["Code"] == "InvocationDoesNotExist":
                raise TransientError(f"command {command_id} not yet visible on {instance_id}") from error
            raise
        code = inv.get("ResponseCode")
        return CommandResult(
            command_id=command_id,
            status=inv["Status"],
            exit_code=None if code in (None, -1) else int(code),
            stdout=inv.get("StandardOutputContent", ""),
            stderr=inv.get("StandardErrorContent", ""),
        )
