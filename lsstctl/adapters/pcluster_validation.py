"""ConfigValidator backed by ParallelCluster's own code: its schema (offline) or its
full validator set through a create_cluster dry run. Users see ParallelCluster's messages.

ParallelCluster's validators call AWS with clients of their own and turn any failure into
a finding, so a throttled DescribeInstanceTypes would read as "your config is invalid".
Every AWS answer those clients get during a dry run is watched (botocore's after-call
events on the default session, which their clients are built from): if AWS failed
transiently, the verdict is not about the config. The dry run is repeated a few times,
then the request answers 503 (AwsUnavailableError), never 400.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from lsstctl.adapters.aws import aws_failure, classify, is_transient, transient_code
from lsstctl.errors import AwsError, AwsUnavailableError, ClusterConfigError, ControlPlaneError

DRY_RUN_ATTEMPTS = 3
# ParallelCluster caches its lookups (AMIs, instance types, subnets) process-wide; kept for
# this long so that a burst of launches does not repeat them, never longer.
CACHE_SECONDS = 300

# moto rejects the VirtualName-only block device mappings these two send (see shared notes).
EMULATOR_SUPPRESSED = ("type:HeadNodeLaunchTemplateValidator", "type:ComputeResourceLaunchTemplateValidator")


def field_of(obj: Any, name: str) -> Any:
    """pcluster returns its response models or plain dicts depending on the path."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def findings_error(content: Any) -> ClusterConfigError:
    """ParallelCluster's 400 on a create (dry run or not): every ERROR finding of its
    validators, each with its type, as the user sees them."""
    message = str(field_of(content, "message") or "invalid configuration")
    if not field_of(content, "configuration_validation_errors"):
        return ClusterConfigError(f"ParallelCluster rejected the cluster config: {message}")
    findings = [
        {"type": field_of(f, "type"), "level": field_of(f, "level"), "message": field_of(f, "message")}
        for f in field_of(content, "configuration_validation_errors") or []
    ]
    errors = [f for f in findings if f["level"] == "ERROR"] or findings
    text = "; ".join(str(f["message"]) for f in errors) or message
    return ClusterConfigError(f"ParallelCluster rejected the cluster config: {text}", details=errors)


def ensure_event_loop() -> None:
    """pcluster's validators run on asyncio and expect a loop in the calling thread,
    which a threaded HTTP server's worker thread does not have."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


class _AwsFailureWatch:
    """Collects, per thread, the transient AWS failures botocore clients see."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._session_id: int | None = None
        self._lock = threading.Lock()

    def _ensure_registered(self) -> None:
        import boto3

        session = boto3._get_default_session()  # ParallelCluster's clients come from it
        with self._lock:
            if self._session_id == id(session):
                return
            session.events.register("after-call", self._after_call, unique_id="lsstctl-validation-watch")
            session.events.register(
                "after-call-error", self._after_call_error, unique_id="lsstctl-validation-watch-error"
            )
            self._session_id = id(session)

    def _record(self, what: str) -> None:
        seen = getattr(self._local, "seen", None)
        if seen is not None:
            seen.append(what)

    def _after_call(self, http_response: Any = None, parsed: Any = None, model: Any = None, **_: Any) -> None:
        status = getattr(http_response, "status_code", 200)
        if status < 300 or not isinstance(parsed, dict):
            return
        code = str(parsed.get("Error", {}).get("Code", ""))
        if transient_code(code, status):
            self._record(f"{getattr(model, 'name', '?')}: {code or status}")

    def _after_call_error(self, exception: Any = None, **_: Any) -> None:
        if isinstance(exception, BaseException) and is_transient(exception):
            self._record(type(exception).__name__)

    def start(self) -> list[str]:
        self._ensure_registered()
        self._local.seen = []
        return self._local.seen

    def stop(self) -> None:
        self._local.seen = None


_watch = _AwsFailureWatch()
_cache_lock = threading.Lock()
_cache_since = [0.0]


def reset_pcluster_caches(force: bool = True) -> None:
    """Forget ParallelCluster's cached lookups (older than CACHE_SECONDS, or all)."""
    from pcluster.aws.aws_api import AWSApi
    from pcluster.aws.common import Cache

    with _cache_lock:
        if force or time.monotonic() - _cache_since[0] > CACHE_SECONDS:
            AWSApi.reset()
            Cache.clear_all()
            _cache_since[0] = time.monotonic()


class PclusterConfigValidator:
    def __init__(
        self,
        *,
        mode: str = "full",
        region: str,
        suppress: Iterable[str] = (),
        attempts: int = DRY_RUN_ATTEMPTS,
        sleep: Any = time.sleep,
    ):
        self._mode = mode
        self._region = region
        self._suppress = list(suppress)
        self._attempts = attempts
        self._sleep = sleep
        self._verdicts: dict[str, tuple[float, Any]] = {}
        self._verdicts_lock = threading.Lock()

    def validate(self, name: str, config: dict[str, Any]) -> list[str]:
        # pcluster picks its region from the environment.
        os.environ.setdefault("AWS_DEFAULT_REGION", self._region)
        if self._mode == "schema":
            return self._schema_only(name, config)
        # A client repeating a request (after a 503 from a later step, say) sends the same
        # config: ParallelCluster's verdict on it, reached without any AWS failure, stands
        # for CACHE_SECONDS instead of costing a dry run each time.
        key = hashlib.sha256(json.dumps([name, config], sort_keys=True, default=str).encode()).hexdigest()
        with self._verdicts_lock:
            cached = self._verdicts.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            if isinstance(cached[1], ClusterConfigError):
                raise cached[1]
            return list(cached[1])
        try:
            verdict: Any = self._dry_run(name, config)
        except ClusterConfigError as rejected:
            verdict = rejected
        with self._verdicts_lock:
            self._verdicts = {k: v for k, v in self._verdicts.items() if time.monotonic() - v[0] < CACHE_SECONDS}
            self._verdicts[key] = (time.monotonic(), verdict)
        if isinstance(verdict, ClusterConfigError):
            raise verdict
        return list(verdict)

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
        failures: list[str] = []
        for attempt in range(self._attempts):
            # A dry run that saw AWS fail may have cached what the failure left behind.
            reset_pcluster_caches(force=bool(failures))
            seen = _watch.start()
            try:
                return self._dry_run_once(name, config)
            except ClusterConfigError:
                if not seen:
                    raise
            except AwsUnavailableError:
                pass
            finally:
                failures = list(seen)
                _watch.stop()
            if attempt < self._attempts - 1:
                self._sleep(0.2 * 2**attempt)
        raise AwsUnavailableError(
            "ParallelCluster could not validate the config: AWS was unavailable or throttling "
            f"({', '.join(sorted(set(failures))[:5]) or 'transient error'}); retry after a pause",
            aws_code="Throttling" if any("Throttl" in f or "Limit" in f for f in failures) else None,
            operation="validate",
        )

    def _dry_run_once(self, name: str, config: dict[str, Any]) -> list[str]:
        import pcluster.lib as pc
        from pcluster.api.errors import DryrunOperationException, ParallelClusterApiException

        ensure_event_loop()
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
            return [str(field_of(m, "message")) for m in field_of(ok.content, "validation_messages") or []]
        except ParallelClusterApiException as error:
            content = error.content
            message = str(field_of(content, "message") or error)
            if getattr(error, "code", None) != 400:
                # Not the user's config: the validation itself broke (an outage, permissions).
                mapped = classify(error)
                if isinstance(mapped, AwsUnavailableError):
                    raise mapped from error
                failure = aws_failure(error)
                if failure:
                    raise AwsError(
                        f"ParallelCluster could not validate the config: {message}",
                        aws_code=failure[0],
                        operation="validate",
                    ) from error
                raise ControlPlaneError(f"ParallelCluster could not validate the config: {message}") from error
            raise findings_error(content) from error
        raise ClusterConfigError("ParallelCluster dry run returned without a verdict")
