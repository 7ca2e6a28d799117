"""Request-level idempotency (the first of two layers; provisioning steps converge too).

A client that repeats a POST or DELETE with the same Idempotency-Key gets the first
response back, without a second effect. The same key with a different body is refused.
A request that failed leaves nothing behind (Powertools deletes its record), so the
client's retry with the same key runs it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lsstctl.errors import IdempotencyKeyReuseError, RequestInProgressError, ValidationError

KEY_TTL_SECONDS = 24 * 3600
Response = dict[str, Any]


def once(
    persistence: Callable[[], Any] | None,
    *,
    key: str | None,
    scope: str,
    body: Any,
    operation: Callable[[], Response],
    lambda_context: Any = None,
) -> Response:
    """Run `operation` at most once per (scope, key). `scope` names the caller and route.
    `persistence`: what builds Powertools' persistence layer (at the first keyed request)."""
    if not key or persistence is None:
        return operation()
    if len(key) > 255:
        raise ValidationError("Idempotency-Key is longer than 255 characters", field="Idempotency-Key")
    # Here, not at import: Powertools' idempotency brings boto3's DynamoDB persistence, which
    # requests without a key (and cold starts) do without.
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="body",
        expires_after_seconds=KEY_TTL_SECONDS,
        raise_on_no_idempotency_key=True,
    )
    # Lets Powertools expire an in-progress record once this request can no longer be
    # running (a killed process cannot release it).
    store = persistence()
    request_context = getattr(store, "request_context", None)
    context = request_context(lambda_context) if request_context else lambda_context
    if context is not None:
        config.register_lambda_context(context)

    @idempotent_function(data_keyword_argument="request", persistence_store=store, config=config)  # type: ignore[untyped-decorator]
    def run(request: dict[str, Any]) -> Response:
        return operation()

    try:
        answer: dict[str, Any] = run(request={"key": f"{scope}#{key}", "body": body})
        return answer
    except IdempotencyValidationError as error:
        raise IdempotencyKeyReuseError(
            "this Idempotency-Key was used with a different request body", field="Idempotency-Key"
        ) from error
    except IdempotencyAlreadyInProgressError as error:
        raise RequestInProgressError("a request with this Idempotency-Key is still in progress") from error
