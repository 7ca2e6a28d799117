"""Fault injection for the control plane's AWS calls: the project's own test double of
AWS's bad days (throttling, 5xx), for tests, `make serve` and `make bench-faults`.

Two modes, both botocore event hooks on the default boto3 session (every client the
control plane and ParallelCluster's validators build comes from it):

- ``sdk``: the HTTP exchange is replaced by a throttling or 5xx answer in the service's own
  wire format (``before-send``). botocore parses it and its retries apply, as with a real
  failing request: this is AWS on a normal bad day.
- ``outlast``: the call fails before botocore's retries can help (``before-call`` answers
  with the error): what the caller sees once the SDK has given up. The worst case.

Only calls made by the control plane are touched (a frame of lsstctl, lambdas, chalice_app
or pcluster on the stack, and none only of the emulator's own): moto's internal clients,
the emulator's EventBridge deliveries and its clock are AWS's side of the wire. Faults
come from a seeded random source at `rate`, or from a deterministic `plan` (fail the k-th
call, fail the first call of every workflow step...). Every injected fault is logged and
kept in `log`, so that a failing test or campaign can be replayed.

Configure `make serve` with LSSTCTL_FAULTS, e.g. ``mode=outlast,rate=0.1,seed=7`` or
``mode=sdk,rate=0.3,services=dynamodb:ec2``.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
_PRODUCT = tuple(str(ROOT / d) + "/" for d in ("lsstctl", "lambdas", "chalice_app"))
_EMULATOR = str(ROOT / "lsstctl" / "emulator") + "/"
_PCLUSTER = "/pcluster/"
MODES = ("sdk", "outlast")


@dataclass(frozen=True)
class Call:
    """One AWS call the control plane makes, as a plan sees it."""

    index: int  # 0-based, over every product call since install()
    service: str
    operation: str
    invocation: dict[str, Any] | None  # the emulator's Lambda invocation making it, if any


@dataclass(frozen=True)
class Fault:
    index: int
    service: str
    operation: str
    code: str
    status: int
    mode: str


# What each service says when it throttles or fails (code, HTTP status).
_THROTTLE = {
    "ec2": "RequestLimitExceeded",
    "dynamodb": "ProvisionedThroughputExceededException",
    "iam": "Throttling",
    "sns": "Throttling",
    "cloudformation": "Throttling",
    "sts": "Throttling",
    "s3": "SlowDown",
    "lambda": "TooManyRequestsException",
}
_FAILURES = (("throttle", 400), ("ServiceUnavailable", 503), ("InternalError", 500))


def _choose(service: str, rng: random.Random) -> tuple[str, int]:
    kind, status = rng.choice(_FAILURES if _PROTOCOLS.get(service) != "cbor" else _FAILURES[1:])
    if kind == "throttle":
        return _THROTTLE.get(service, "ThrottlingException"), (
            503 if service == "s3" else 429 if service == "lambda" else 400
        )
    if service == "dynamodb" and kind == "InternalError":
        return "InternalServerError", status
    return kind, status


def _wire_body(protocol: str, code: str) -> tuple[bytes, dict[str, str]]:
    """The error body a service of this protocol sends (botocore parses it)."""
    message = "Rate exceeded" if status_is_throttle(code) else "Service is unavailable"
    if protocol == "json":
        return json.dumps({"__type": code, "message": message}).encode(), {"Content-Type": "application/x-amz-json-1.0"}
    if protocol == "rest-json":
        return json.dumps({"message": message}).encode(), {"x-amzn-ErrorType": code, "Content-Type": "application/json"}
    if protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>lsstctl-fault</RequestId></ErrorResponse>"
        )
        return body.encode(), {"Content-Type": "text/xml"}
    if protocol == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>lsstctl-fault</RequestID></Response>"
        )
        return body.encode(), {"Content-Type": "text/xml"}
    if protocol == "rest-xml":
        return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode(), {
            "Content-Type": "application/xml"
        }
    return b"", {}  # other protocols (CBOR): the status alone says 5xx


def status_is_throttle(code: str) -> bool:
    return (
        "Throttl" in code
        or "Limit" in code
        or code in {"SlowDown", "TooManyRequestsException", "ProvisionedThroughputExceededException"}
    )


class _Raw:
    """The raw stream an AWSResponse wraps."""

    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data

    def read(self, *_: Any) -> bytes:
        data, self._data = self._data, b""
        return data


def product_call() -> bool:
    """Whether the current AWS call comes from the control plane (see module docstring)."""
    frame: Any = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_PRODUCT) and not name.startswith(_EMULATOR) or _PCLUSTER in name:
            return True
        frame = frame.f_back
    return False


@dataclass
class FaultInjector:
    rate: float = 0.0
    mode: str = "outlast"
    seed: int = 0
    services: frozenset[str] | None = None  # None: every service
    plan: Callable[[Call], bool] | None = None
    scope: Callable[[], bool] = product_call
    # Always this (code, HTTP status) instead of a random throttle or 5xx: e.g. a
    # permanent ("AccessDeniedException", 400), to check what is not transient.
    error: tuple[str, int] | None = None
    log: list[Fault] = field(default_factory=list)
    calls: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"fault mode must be one of {MODES}, not {self.mode!r}")
        self.services = service_ids(self.services)
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._session: Any = None
        self.enabled = True

    # configuration --------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str) -> FaultInjector:
        """`mode=outlast,rate=0.1,seed=7,services=dynamodb:ec2` (what LSSTCTL_FAULTS holds)."""
        values = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        unknown = set(values) - {"mode", "rate", "seed", "services"}
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; use mode, rate, seed, services")
        services = values.get("services")
        return cls(
            rate=float(values.get("rate", 0.1)),
            mode=values.get("mode", "outlast"),
            seed=int(values.get("seed", 0)),
            services=frozenset(services.split(":")) if services else None,
        )

    def install(self) -> FaultInjector:
        """Hook into the default session. A client copies the session's hooks when it is
        built, so the control plane's cached clients are dropped (`wiring.deps`): the
        next ones carry the hooks. Take `wiring.deps()` after this, not before."""
        import boto3

        self._session = boto3._get_default_session()
        events = self._session.events
        # First, so that an in-process moto (which also answers before-send) never sees the call.
        events.register_first("before-call", self._before_call, unique_id="lsstctl-faults-call")
        events.register_first("before-send", self._before_send, unique_id="lsstctl-faults-send")
        self.enabled = True
        if "lsstctl.wiring" in sys.modules:
            sys.modules["lsstctl.wiring"].drop_clients()
        log.info(
            "fault injection on: mode=%s rate=%s seed=%s services=%s",
            self.mode,
            self.rate,
            self.seed,
            sorted(self.services) if self.services else "all",
        )
        return self

    def uninstall(self) -> None:
        self.enabled = False  # clients built meanwhile keep a copy of the hooks: now inert
        if self._session is not None:
            self._session.events.unregister("before-call", unique_id="lsstctl-faults-call")
            self._session.events.unregister("before-send", unique_id="lsstctl-faults-send")
            self._session = None

    def __enter__(self) -> FaultInjector:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # deciding -------------------------------------------------------------------------
    def _decide(self, service: str, operation: str, phase: str) -> tuple[str, int] | None:
        if not self.enabled or phase != self.mode:
            return None
        if self.services is not None and service not in self.services:
            return None
        if not self.scope():
            return None
        from lsstctl.emulator.glue import current_invocation

        with self._lock:
            call = Call(self.calls, service, operation, current_invocation())
            self.calls += 1
            fail = self.plan(call) if self.plan is not None else self._rng.random() < self.rate
            if not fail:
                return None
            code, status = self.error or _choose(service, self._rng)
            self.log.append(Fault(call.index, service, operation, code, status, self.mode))
        log.info("injected fault #%d: %s.%s -> %s (%d, %s)", call.index, service, operation, code, status, self.mode)
        return code, status

    @staticmethod
    def _names(event_name: str) -> tuple[str, str]:
        parts = event_name.split(".")
        return (parts[1] if len(parts) > 1 else "?"), (parts[2] if len(parts) > 2 else "?")

    def _before_call(self, model: Any = None, event_name: str = "", **_: Any) -> Any:
        service, operation = self._names(event_name)
        decided = self._decide(service, operation, "outlast")
        if decided is None:
            return None
        from botocore.awsrequest import AWSResponse

        code, status = decided
        message = "Rate exceeded" if status_is_throttle(code) else "Service is unavailable"
        parsed = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": f"lsstctl-fault-{self.calls}"},
        }
        return AWSResponse("https://fault.lsstctl.invalid/", status, {}, _Raw(b"")), parsed

    def _before_send(self, request: Any = None, event_name: str = "", **_: Any) -> Any:
        service, operation = self._names(event_name)
        decided = self._decide(service, operation, "sdk")
        if decided is None:
            return None
        from botocore.awsrequest import AWSResponse

        code, status = decided
        protocol = _PROTOCOLS.get(service, "json")
        body, headers = _wire_body(protocol, code)
        return AWSResponse(getattr(request, "url", ""), status, headers, _Raw(body))

    # reporting ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        by_service: dict[str, int] = {}
        for fault in self.log:
            by_service[fault.service] = by_service.get(fault.service, 0) + 1
        return {
            "mode": self.mode,
            "rate": self.rate,
            "seed": self.seed,
            "calls": self.calls,
            "injected": len(self.log),
            "by_service": dict(sorted(by_service.items())),
        }


# botocore's protocol of each service the control plane calls, by the service id that
# event names carry (`service_model.service_id.hyphenize()`).
_PROTOCOLS = {
    "dynamodb": "json",
    "ec2": "ec2",
    "iam": "query",
    "sns": "query",
    "sqs": "json",
    "sfn": "json",
    "eventbridge": "json",
    "ssm": "json",
    "secrets-manager": "json",
    "cloudwatch": "cbor",
    "cloudformation": "query",
    "lambda": "rest-json",
    "s3": "rest-xml",
    "cloudwatch-logs": "json",
    "sts": "query",
    "budgets": "json",
    "pricing": "json",
}
# boto3 client names whose service id differs.
SERVICE_IDS = {
    "stepfunctions": "sfn",
    "events": "eventbridge",
    "secretsmanager": "secrets-manager",
    "logs": "cloudwatch-logs",
}


def service_ids(names: Any) -> frozenset[str] | None:
    """Client names or service ids -> service ids (None stays None: every service)."""
    return None if names is None else frozenset(SERVICE_IDS.get(n, n) for n in names)


# deterministic plans ---------------------------------------------------------------------
def fail_call(index: int) -> Callable[[Call], bool]:
    """Fail exactly the call with this index (one fault at a time)."""
    return lambda call: call.index == index


Position = tuple[str, tuple[str, int]]  # (action, ("service.Operation", n-th such call))


def _key(call: Call, counts: dict[str, int]) -> tuple[str, int]:
    operation = f"{call.service}.{call.operation}"
    n = counts.get(operation, 0)
    counts[operation] = n + 1
    return operation, n


def call_positions(calls: list[Call]) -> list[Position]:
    """Where each call sits: (the workflow action making it, (its operation, the how-many-th
    call of that operation it is in the action's first invocation)). Keyed by operation,
    not by overall index, so a step whose number of status reads varies with timing (a
    command polled until it ends) keeps the same positions for its other calls. Repeated
    invocations of an action (polls) make the same calls again, so one of each is enough."""
    positions: list[Position] = []
    first: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    for call in calls:
        invocation = call.invocation or {}
        if not invocation.get("action"):
            continue  # not a workflow step's call
        action = str(invocation["action"])
        if first.setdefault(action, str(invocation.get("request_id"))) != str(invocation.get("request_id")):
            continue
        positions.append((action, _key(call, counts.setdefault(action, {}))))
    return positions


class fail_at:
    """Fail the call at each of these positions (see call_positions) once: in the first
    invocation of its action, the n-th call of that operation. Positions of different
    actions make one workflow run in which each of those steps fails once, one after the
    other. `fired` lists the positions whose call did fail (a step that made fewer calls
    this time, or did not run at all, leaves its position unfired)."""

    def __init__(self, *positions: Position) -> None:
        self.wanted = dict(positions)
        if len(self.wanted) != len(positions):
            raise ValueError("at most one position per action")
        self.fired: list[Position] = []
        self._first: dict[str, Any] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, call: Call) -> bool:
        invocation = call.invocation or {}
        action = invocation.get("action")
        if action not in self.wanted:
            return False
        with self._lock:
            if self._first.setdefault(action, invocation.get("request_id")) != invocation.get("request_id"):
                return False  # a retry or a later poll: the step already failed once
            key = _key(call, self._counts.setdefault(action, {}))
            if key != self.wanted[action]:
                return False
            self.fired.append((action, key))
            return True


def fault_rounds(positions: list[Position]) -> list[tuple[Position, ...]]:
    """Rounds of positions, one per action each: round k fails the k-th call of every
    step that has one. Every position is in exactly one round."""
    by_action: dict[str, list[tuple[str, int]]] = {}
    for action, key in positions:
        by_action.setdefault(action, []).append(key)
    rounds = max((len(v) for v in by_action.values()), default=0)
    return [tuple((a, v[k]) for a, v in by_action.items() if k < len(v)) for k in range(rounds)]


def recording(into: list[Call]) -> Callable[[Call], bool]:
    """A plan that fails nothing and keeps every call (to learn a run's positions)."""

    def plan(call: Call) -> bool:
        into.append(call)
        return False

    return plan


def fail_first_call_of_each_step() -> Callable[[Call], bool]:
    """The first AWS call of the first invocation of every workflow action fails once: a
    workflow in which every step fails once and must recover."""
    failed: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def plan(call: Call) -> bool:
        if not call.invocation or not call.invocation.get("action"):
            return False
        key = (call.invocation["function"], call.invocation["action"])
        with lock:
            if key in failed:
                return False
            failed.add(key)
            return True

    return plan
