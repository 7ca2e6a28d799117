"""The emulator's AWS state on disk, so that `make serve` stopped and started again has
the same users, clusters, jobs, ledgers, instances, alarms and executions.

moto keeps every service's state in plain Python objects (one backend per account and
region). They are pickled as a whole: locks, events and threads (which cannot be) become
fresh ones or nothing, and a few moto containers whose default factory is a lambda are
rebuilt with an equivalent one; each backend replaces its fresh counterpart on restore. What was running cannot survive a stop: on restore, a
Step Functions execution still RUNNING is ABORTED and an SSM command still in progress has
Failed — the same as AWS after an outage of its own — and the reconciler, run at start,
resumes or re-drives what they were doing.

Snapshots are written atomically (a temporary file renamed over the last one), at every
clean stop and every minute in `serve`, so that even a killed emulator loses at most a
minute.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import pickle
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _rebuild_defaultdict(spec: Any, items: list[tuple[Any, Any]]) -> defaultdict[Any, Any]:
    built: defaultdict[Any, Any] = defaultdict(_factory(spec))
    built.update(items)
    return built


def _factory(spec: Any) -> Callable[[], Any] | None:
    if spec is None:
        return None
    kind, inner = spec
    if kind == "defaultdict":
        return functools.partial(_rebuild_defaultdict, inner, [])
    return inner  # a type


def _factory_spec(factory: Callable[[], Any] | None) -> Any:
    """What a default factory makes, in a form that pickles (moto uses lambdas)."""
    if factory is None:
        return None
    made = factory()
    if isinstance(made, defaultdict):
        return ("defaultdict", _factory_spec(made.default_factory))
    return ("type", type(made))


def _fresh(kind: type) -> Any:
    return kind()


def _nothing() -> None:
    return None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES):
            return (threading.RLock if isinstance(obj, _LOCK_TYPES[1]) else threading.Lock, ())
        if isinstance(obj, (threading.Event, threading.Condition, threading.Semaphore)):
            return (_fresh, (type(obj),))
        if isinstance(obj, threading.Thread):
            return (_nothing, ())
        if isinstance(obj, weakref.WeakValueDictionary):
            return (weakref.WeakValueDictionary, (), None, None, iter(list(obj.items())))
        if isinstance(obj, defaultdict) and type(obj) is not defaultdict:
            # A subclass whose __init__ takes other arguments (moto's ssm ParameterDict).
            return (
                _rebuild_defaultdict_subclass,
                (type(obj), _factory_spec(obj.default_factory), dict(vars(obj)), list(obj.items())),
            )
        if isinstance(obj, defaultdict) and getattr(obj.default_factory, "__name__", "") == "<lambda>":
            return (_rebuild_defaultdict, (_factory_spec(obj.default_factory), list(obj.items())))
        return NotImplemented


def _rebuild_defaultdict_subclass(
    kind: type, spec: Any, attributes: dict[str, Any], items: list[tuple[Any, Any]]
) -> Any:
    built = kind.__new__(kind)
    defaultdict.__init__(built, _factory(spec))
    vars(built).update(attributes)
    built.update(items)
    return built


def _backends() -> list[tuple[str, str, str, Any]]:
    """(backend class path, account, region, backend) of every backend in use. The class
    path tells apart services with two backends (Step Functions' plain one and its
    executing interpreter's)."""
    from moto.core.base_backend import BackendDict

    found = []
    for backend_dict in list(BackendDict._instances):
        for account, region, backend in backend_dict.iter_backends():
            # IAM exists per partition; only the commercial one is used here.
            if backend_dict.service_name == "iam" and region != "aws":
                continue
            kind = f"{backend_dict.backend.__module__}:{backend_dict.backend.__qualname__}"
            found.append((kind, account, region, backend))
    return found


def _backend_dict(kind: str) -> Any:
    import importlib

    from moto.core.base_backend import BackendDict

    module_name, _, class_name = kind.partition(":")
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, BackendDict) and value.backend.__qualname__ == class_name:
            return value
    raise LookupError(f"no moto backend {kind}")


def save(path: Path, extra: dict[str, Any] | None = None) -> int:
    """Write every backend's state (and `extra`, the emulator's own settings); bytes written."""
    buffer = io.BytesIO()
    # The backend objects themselves: models point back at their backend, and must keep
    # pointing at the one that serves requests after a restore.
    state = {(kind, account, region): backend for kind, account, region, backend in _backends()}
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(
        {"format": FORMAT, "saved_at": time.time(), "backends": state, "extra": extra or {}}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)
    return buffer.tell()


def restore(path: Path) -> dict[str, Any] | None:
    """Put a snapshot's state back into moto's backends; returns its `extra`, or None
    when there is no (readable) snapshot."""
    if not path.exists():
        return None
    try:
        snapshot = pickle.loads(path.read_bytes())
    except Exception as error:  # a snapshot from another moto, or half-written by a crash
        log.warning("ignoring unreadable emulator snapshot %s: %s", path, error)
        return None
    if snapshot.get("format") != FORMAT:
        log.warning("ignoring emulator snapshot %s of format %s", path, snapshot.get("format"))
        return None
    for (kind, account, region), backend in snapshot["backends"].items():
        dict.__setitem__(_backend_dict(kind)[account], region, backend)
    settle_interrupted_work()
    return snapshot["extra"]


def settle_interrupted_work() -> dict[str, int]:
    """What was running when the emulator stopped did not finish: say so, as AWS would."""
    settled = {"executions": 0, "commands": 0}
    now = datetime.now(UTC)
    for kind, _, _, backend in _backends():
        if kind.startswith("moto.stepfunctions."):
            for machine in getattr(backend, "state_machines", []):
                for execution in getattr(machine, "executions", []):
                    if execution.status == "RUNNING":
                        execution.status = "ABORTED"
                        execution.stop_date = now
                        execution.cause = "the emulator stopped while it ran"
                        settled["executions"] += 1
        elif kind.startswith("moto.ssm."):
            for command in getattr(backend, "_commands", []):
                if command.status in {"Pending", "InProgress"}:
                    command.status = command.status_details = "Failed"
                    for invocation in command.invocations:
                        invocation.update(
                            Status="Failed",
                            StatusDetails="Failed",
                            ResponseCode=1,
                            StandardErrorContent="the emulator stopped while the command ran",
                        )
                    settled["commands"] += 1
    return settled
