"""A per-owner limit on mutating requests: a fixed one-minute window counted in the state
table by one conditional write per request (so racing requests of one owner, on any
number of API containers, cannot exceed it). Reads are not limited. A refused request
answers 429 `rate_limited` with Retry-After: the seconds left in the window."""

from __future__ import annotations

from lsstctl.errors import RateLimitedError
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal


def admit(deps: Deps, principal: Principal) -> None:
    limit = deps.settings.rate_limit_per_minute
    if limit <= 0:
        return
    now = deps.clock()
    window = now.strftime("W#%Y-%m-%dT%H:%M")
    epoch = int(now.timestamp())
    if not deps.store.count_request(principal.name, window, limit, expires_at=epoch - epoch % 60 + 3600):
        raise RateLimitedError(
            f"{principal.name} sent {limit} changes this minute, the most the control plane admits; "
            "retry after the pause",
            retry_after_seconds=60 - epoch % 60 or 1,
            details={"limit_per_minute": limit},
        )
