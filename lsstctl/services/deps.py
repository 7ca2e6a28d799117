"""The dependencies every service function receives: ports, settings and a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lsstctl.ports import (
    AuditLog,
    ClusterEngine,
    ConfigValidator,
    EventPublisher,
    GuardShards,
    IdentityProvisioner,
    JobSteps,
    RemoteRunner,
    StateStore,
    WorkflowStarter,
)
from lsstctl.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    settings: Settings
    store: StateStore
    engine: ClusterEngine
    validator: ConfigValidator
    runner: RemoteRunner
    users: IdentityProvisioner
    events: EventPublisher
    workflows: WorkflowStarter
    audit: AuditLog  # the append-only audit trail (lsstctl.services.audit)
    catalog: Any = None  # lsstctl.domain.pricing.PriceCatalog
    inventory: Any = None  # Ec2Inventory: what runs, by cluster
    monitor: Any = None  # CloudWatchMonitor: idle alarms and queue depth
    notifier: Any = None  # SnsNotifier: owner notifications
    # (instance type, zone) -> USD/h of the types asked for (lsstctl.domain.pricing.spot_hourly)
    spot_prices: Callable[[list[str]], dict[tuple[str, str], float]] = field(default=lambda types: {})
    # instance type -> (vCPUs, memory MiB) of the types asked for (unknown types left out)
    instance_sizes: Callable[[list[str]], dict[str, tuple[int, int]]] = field(default=lambda types: {})
    idempotency: Callable[[], Any] | None = None  # builds Powertools' persistence layer; None: off
    # JobStepsFunction: where the API cancels jobs and reads logs (None: here, through runner)
    job_steps: JobSteps | None = None
    stack_cache: Any = None  # StackCacheStorage: installed stacks kept between clusters
    chat: Any = None  # SlackChat: slash-command signatures, replies and channel messages
    guard_shards: GuardShards | None = None  # where a pass sends its other shares (None: none)
    clock: Callable[[], datetime] = field(default=_now)
    sleep: Callable[[float], None] = field(default=time.sleep)
