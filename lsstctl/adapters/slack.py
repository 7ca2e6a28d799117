"""Slack, through slack_sdk: the slash command's request signature (v0, the signing secret
read from Secrets Manager and kept 5 minutes per container) and messages to response URLs and
incoming webhooks (retried on connection errors, 429 and 5xx by slack_sdk's own handlers)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook import WebhookClient

from lsstctl.adapters.aws import LazyClient
from lsstctl.errors import ChatDeliveryError, TransientError

SECRET_TTL_SECONDS = 300


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]):
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackChat:
    secrets = LazyClient("secretsmanager")

    def __init__(
        self, signing_secret_id: str, *, secrets: Any = None, now: Callable[[], float] = time.time, retries: int = 2
    ):
        self._secret_id = signing_secret_id
        self.secrets = secrets
        self._now = now
        self._retries = retries
        self._cached: tuple[float, str] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._secret_id)

    def _signing_secret(self) -> str:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < SECRET_TTL_SECONDS:
            return self._cached[1]
        value = self.secrets.get_secret_value(SecretId=self._secret_id)["SecretString"]
        with suppress(ValueError, KeyError, TypeError):  # a plain string, or {"signing_secret": "..."}
            value = json.loads(value)["signing_secret"]
        self._cached = (now, str(value))
        return self._cached[1]

    def verify(self, body: str, timestamp: str | None, signature: str | None) -> bool:
        """Slack's v0 signature over the raw body, within 5 minutes either way of now
        (slack_sdk's SignatureVerifier: HMAC-SHA256, constant-time comparison)."""
        if not self.enabled or not timestamp or not signature:
            return False
        try:
            int(timestamp)
        except ValueError:
            return False
        return SignatureVerifier(self._signing_secret(), clock=_Clock(self._now)).is_valid(body, timestamp, signature)

    def post(self, url: str, message: dict[str, Any]) -> None:
        """One message to a response URL or an incoming webhook. Slack's 429 and 5xx and lost
        connections are retried here, then are TransientError (the caller's retry); any other
        refusal is ChatDeliveryError (permanent: a revoked webhook, an expired response URL)."""
        client = WebhookClient(
            url,
            timeout=10,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=self._retries),
                RateLimitErrorRetryHandler(max_retry_count=self._retries),
                ServerErrorRetryHandler(max_retry_count=self._retries),
            ],
        )
        try:
            response = client.send_dict(message)
        except OSError as error:
            raise TransientError(f"Slack unreachable: {error}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"Slack answered {response.status_code}")
        if response.status_code >= 400:
            raise ChatDeliveryError(f"Slack refused the message ({response.status_code}: {str(response.body)[:100]})")
