"""The audit trail: who did what, when, under which request, and how it ended.

One entry for every mutating API call (at the API's one boundary, refused ones included),
every ChatOps command, and every automatic action of the control plane: a teardown started
by the guard, an idle alarm or the reconciler, node caps the governor applied, a busy
cluster kept from an idle teardown. `who` is a full ARN: the API caller's as SigV4 proved
it (or as the registry mapped the local identity header), a Slack user's
`slack:<team>:<user>`, and for an automatic action the ARN of the function that acted.
Admins read it with `GET /audit`; nobody can change it (lsstctl.adapters.audit_log).

Recording never undoes or fails the action it records (that has happened): a write that
fails is logged with the whole entry and counted (metric `AuditWriteFailed`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lsstctl.domain.models import iso
from lsstctl.errors import ForbiddenError, ValidationError
from lsstctl.observability import current_keys, logger, metrics
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal

DEFAULT_WINDOW = timedelta(days=1)
MAX_LIMIT = 1000
MAX_PAGES = 20  # store pages read per request; the answer's `next` continues from there
FILTERS = ("who", "owner", "cluster", "action", "outcome")


def actor() -> str:
    """Who acts on this thread: the API's caller, else the invoked function, else us."""
    keys = current_keys()
    return str(keys.get("caller") or keys.get("function_arn") or keys.get("function_name") or "lsstctl")


def record(
    deps: Deps,
    action: str,
    outcome: str,
    *,
    who: str | None = None,
    owner: str | None = None,
    cluster: str | None = None,
    **detail: Any,
) -> bool:
    """Add one entry; `who` defaults to the thread's actor, the request id to the thread's.
    False when it could not be written (logged with the entry, and counted)."""
    keys = current_keys()
    entry = {
        "at": iso(deps.clock()),
        "who": who or actor(),
        "owner": owner,
        "action": action,
        "cluster": cluster,
        "request_id": str(keys.get("request_id") or keys.get("function_request_id") or ""),
        "outcome": outcome,
        **{k: v for k, v in detail.items() if v is not None},
    }
    try:
        deps.audit.record(entry)
    except Exception:
        logger.exception("audit entry not written", extra={"audit": entry})
        metrics.add_metric(name="AuditWriteFailed", unit="Count", value=1)
        return False
    return True


def query(
    deps: Deps,
    principal: Principal,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    token: str | None = None,
    **filters: str | None,
) -> dict[str, Any]:
    """Entries written in [since, until) (default: the last day), those matching every
    filter given (exact values; `action` also by prefix, e.g. `DELETE` or `teardown`),
    at most `limit`; `next` continues where this page stopped."""
    if not principal.is_admin:
        raise ForbiddenError("only admins may read the audit trail")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    end = until or deps.clock()
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise ValidationError("since must be before until", field="since")
    wanted = {k: v for k, v in filters.items() if v}
    entries: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        page, token = deps.audit.read(start, end, token=token, limit=limit - len(entries))
        entries += [e for e in page if _matches(e, wanted)]
        if not token or len(entries) >= limit:
            break
    return {"since": iso(start), "until": iso(end), "entries": entries, "next": token}


def _matches(entry: dict[str, Any], wanted: dict[str, str]) -> bool:
    for key, value in wanted.items():
        have = str(entry.get(key) or "")
        if key == "action" and have.startswith(value):
            continue
        if have != value:
            return False
    return True
