"""Default AWS clients, built lazily and in one place.

Adapters accept a client (tests, other accounts) and otherwise build a default on first
use — never at import time, since Chalice imports the app while packaging. Creating
clients from boto3's default session is not thread-safe, and the emulator runs handlers
on many threads, hence the lock.
"""
from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()


def default_client(service: str) -> Any:
    import boto3

    with _lock:
        return boto3.client(service)


def default_resource(service: str) -> Any:
    import boto3

    with _lock:
        return boto3.resource(service)


class LazyClient:
    """Attribute holding an adapter's client: the one it was given, or a default built on
    first use."""

    def __init__(self, service: str, *, resource: bool = False):
        self._service = service
        self._resource = resource
        self._attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_lazy_{name}"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get(self._attr)
        if value is None:
            value = default_resource(self._service) if self._resource else default_client(self._service)
            obj.__dict__[self._attr] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self._attr] = value
