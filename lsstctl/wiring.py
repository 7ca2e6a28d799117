"""Builds the adapters once per container, lazily (Chalice imports app.py while packaging,
so nothing here may call AWS at import time). Tests call `reset()` after changing settings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

from lsstctl.adapters.aws import RetryProfile, current_retry_profile
from lsstctl.services.deps import Deps
from lsstctl.settings import Settings, get_settings

_clock: Callable[[], datetime] | None = None


def use_clock(clock: Callable[[], datetime] | None) -> None:
    """Run the control plane on another clock (the cost simulation's); None: real time."""
    global _clock
    _clock = clock
    drop_clients()


def _suppressed(settings: Settings) -> list[str]:
    return [v for v in settings.suppressed_validators.split(",") if v]


def _engine_and_validator(settings: Settings) -> tuple[Any, Any]:
    """The engine (and the validator, which is ParallelCluster's own code too): in process,
    or, where `engine_function_name` is set, the engine function's (on AWS every function
    but that one: ParallelCluster's library stays out of them)."""
    if settings.engine_function_name:
        from lsstctl.adapters.engine_function import FunctionClusterEngine

        remote = FunctionClusterEngine(settings.engine_function_name)
        return remote, remote
    from lsstctl.adapters.pcluster_validation import PclusterConfigValidator

    validator = PclusterConfigValidator(
        mode=settings.config_validation, region=settings.region, suppress=_suppressed(settings)
    )
    return _engine(settings), validator


def _engine(settings: Settings) -> Any:
    if settings.engine == "parallelcluster":
        from lsstctl.adapters.pcluster_engine import ParallelClusterEngine

        return ParallelClusterEngine(region=settings.region, suppress_validators=_suppressed(settings))
    from lsstctl.adapters.local_engine import LocalClusterEngine

    return LocalClusterEngine(
        provision_seconds=settings.local_provision_seconds,
        delete_seconds=settings.local_delete_seconds,
        clock=_clock,
    )


def _idempotency(settings: Settings) -> Callable[[], Any]:
    """Powertools' idempotency store, built at the first request that carries an
    Idempotency-Key (with its DynamoDB client): a cold start without one pays for neither."""

    @cache
    def store() -> Any:
        from lsstctl.adapters.aws import default_client
        from lsstctl.adapters.idempotency_store import IdempotencyStore

        # Our client: the same retry policy as every other call.
        return IdempotencyStore(table_name=settings.idempotency_table, boto3_client=default_client("dynamodb"))

    return store


class _BuiltOnFirstUse:
    """An adapter made (its library imported) at its first use: Slack's SDK is for the paths
    that talk to Slack, not for every cold start."""

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)


def _slack(settings: Settings) -> Any:
    from lsstctl.adapters.slack import SlackChat

    return SlackChat(settings.slack_signing_secret_arn)


def build(settings: Settings) -> Deps:
    from lsstctl.adapters.aws import configure_library_retries

    configure_library_retries()
    from lsstctl.adapters.audit_log import CloudWatchAuditLog
    from lsstctl.adapters.cloudwatch import CloudWatchMonitor
    from lsstctl.adapters.dynamodb_state import DynamoStateStore
    from lsstctl.adapters.efs_cache import EfsStackCache
    from lsstctl.adapters.eventbridge import EventBridgePublisher
    from lsstctl.adapters.guard_shards import LambdaGuardShards
    from lsstctl.adapters.iam_users import IamUserProvisioner
    from lsstctl.adapters.inventory import Ec2Inventory, InstanceSizes
    from lsstctl.adapters.job_function import JobStepsFunction
    from lsstctl.adapters.price_list import SpotPrices
    from lsstctl.adapters.sns_notifier import SnsNotifier
    from lsstctl.adapters.ssm_runner import SsmRunner
    from lsstctl.adapters.stepfunctions import StepFunctionsStarter
    from lsstctl.domain.models import utcnow
    from lsstctl.domain.pricing import load_catalog

    extra: dict[str, Any] = {"clock": _clock} if _clock else {}
    engine, validator = _engine_and_validator(settings)
    return Deps(
        **extra,
        settings=settings,
        store=DynamoStateStore(settings.state_table, clock=_clock or utcnow),
        engine=engine,
        validator=validator,
        runner=SsmRunner(),
        users=IamUserProvisioner(path=settings.iam_path),
        events=EventBridgePublisher(settings.event_bus),
        workflows=StepFunctionsStarter(),
        audit=CloudWatchAuditLog(settings.audit_log_group),
        catalog=load_catalog(),
        inventory=Ec2Inventory(),
        monitor=CloudWatchMonitor(),
        notifier=SnsNotifier(settings.notifications_topic_arn),
        spot_prices=SpotPrices().by_zone,
        instance_sizes=InstanceSizes().of,
        job_steps=JobStepsFunction(settings.job_steps_function_name) if settings.job_steps_function_name else None,
        idempotency=_idempotency(settings),
        stack_cache=EfsStackCache(),
        chat=_BuiltOnFirstUse(lambda: _slack(settings)),
        guard_shards=LambdaGuardShards(settings.guard_function_name) if settings.guard_function_name else None,
    )


def deps() -> Deps:
    """The control plane's adapters, one set per retry profile: a clean-up handler (inside
    `retry_profile("cleanup")`) gets clients of its own, never the ones other paths share."""
    return _deps_for(current_retry_profile())


@cache
def _deps_for(profile: RetryProfile) -> Deps:
    return build(get_settings())


@lru_cache(maxsize=1)
def engine_deps() -> Deps:
    """The engine function's own: the engine in process, whatever names the function."""
    return build(get_settings().model_copy(update={"engine_function_name": ""}))


def drop_clients() -> None:
    """Forget the adapters (and their clients): the next `deps()` builds new ones."""
    _deps_for.cache_clear()
    engine_deps.cache_clear()


def reset() -> None:
    get_settings.cache_clear()
    drop_clients()
    if "pcluster" in sys.modules:  # its lookups belong to the AWS (or moto) they came from
        from lsstctl.adapters.pcluster_validation import reset_pcluster_caches

        reset_pcluster_caches()
