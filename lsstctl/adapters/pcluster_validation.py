"""ConfigValidator backed by ParallelCluster's own code: its schema (offline) or its
full validator set through a create_cluster dry run. Users see ParallelCluster's messages."""
from __future__ import annotations

import asyncio
import os
from typing import Any, Iterable

from lsstctl.errors import ClusterConfigError, ControlPlaneError

# moto rejects the VirtualName-only block device mappings these two send (see shared notes).
EMULATOR_SUPPRESSED = ("type:HeadNodeLaunchTemplateValidator", "type:ComputeResourceLaunchTemplateValidator")


def _field(obj: Any, name: str) -> Any:
    """pcluster returns its response models or plain dicts depending on the path."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _ensure_event_loop() -> None:
    """pcluster's validators run on asyncio and expect a loop in the calling thread,
    which a threaded HTTP server's worker thread does not have."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


class PclusterConfigValidator:
    def __init__(self, *, mode: str = "full", region: str, suppress: Iterable[str] = ()):
        self._mode = mode
        self._region = region
        self._suppress = list(suppress)

    def validate(self, name: str, config: dict[str, Any]) -> list[str]:
        # pcluster picks its region from the environment.
        os.environ.setdefault("AWS_DEFAULT_REGION", self._region)
        if self._mode == "schema":
            return self._schema_only(name, config)
        return self._dry_run(name, config)

    @staticmethod
    def _schema_only(name: str, config: dict[str, Any]) -> list[str]:
        from marshmallow import ValidationError as SchemaError
        from pcluster.schemas.cluster_schema import ClusterSchema

        try:
            ClusterSchema(cluster_name=name).load(config)
        except SchemaError as error:
            raise ClusterConfigError(
                f"ParallelCluster rejected the cluster config: {error.messages}",
                details=[{"type": "ConfigSchemaValidator", "message": str(error.messages)}],
            ) from error
        return []

    def _dry_run(self, name: str, config: dict[str, Any]) -> list[str]:
        import pcluster.lib as pc
        from pcluster.api.errors import DryrunOperationException, ParallelClusterApiException
        from pcluster.aws.aws_api import AWSApi
        from pcluster.aws.common import Cache

        # pcluster caches clients and lookups process-wide; start clean so a warm Lambda
        # container (or a test run) never validates against yesterday's answers.
        AWSApi.reset()
        Cache.clear_all()
        _ensure_event_loop()
        try:
            pc.create_cluster(
                cluster_name=name,
                cluster_configuration=config,
                region=self._region,
                dryrun=True,
                suppress_validators=self._suppress or None,
                validation_failure_level="ERROR",
            )
        except DryrunOperationException as ok:
            return [str(_field(m, "message")) for m in _field(ok.content, "validation_messages") or []]
        except ParallelClusterApiException as error:
            content = error.content
            message = str(_field(content, "message") or error)
            if getattr(error, "code", None) != 400:
                # Not the user's config: the validation itself broke (permissions, outage).
                raise ControlPlaneError(f"ParallelCluster could not validate the config: {message}") from error
            if not _field(content, "configuration_validation_errors"):
                raise ClusterConfigError(f"ParallelCluster rejected the cluster config: {message}") from error
            findings = [
                {"type": _field(f, "type"), "level": _field(f, "level"), "message": _field(f, "message")}
                for f in _field(content, "configuration_validation_errors") or []
            ]
            errors = [f for f in findings if f["level"] == "ERROR"] or findings
            text = "; ".join(str(f["message"]) for f in errors) or str(_field(content, "message") or "invalid configuration")
            raise ClusterConfigError(f"ParallelCluster rejected the cluster config: {text}", details=errors) from error
        raise ClusterConfigError("ParallelCluster dry run returned without a verdict")
