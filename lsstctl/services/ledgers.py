"""Spend ledgers as of now: the guard writes a live cluster's ledger only when what it says
changes, and records when its pass measured every live cluster; an unchanged ledger is
carried forward to that pass (`domain.cost.ledger_as_of`), never past it (a guard that
stopped measuring leaves spend where it last saw it, not a guess)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lsstctl.domain.cost import ledger_as_of
from lsstctl.domain.lifecycle import ACTIVE
from lsstctl.services.deps import Deps

_LIVE = frozenset(state.value for state in ACTIVE)


def pass_stamp(at: datetime) -> str:
    """The guard pass's time as stored: fixed width, so later is greater as text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def carried(ledger: dict[str, Any], pass_at: str | None) -> dict[str, Any]:
    """`ledger` as of the guard's last pass, when it is a live cluster's (written on change)."""
    if pass_at is None or ledger.get("state") not in _LIVE:
        return ledger
    return ledger_as_of(ledger, datetime.fromisoformat(pass_at))


def current(deps: Deps, cluster_id: str, generation: int) -> dict[str, Any] | None:
    ledger = deps.store.get_ledger(cluster_id, generation)
    return None if ledger is None else carried(ledger, deps.store.guard_pass_at())


def current_all(deps: Deps, owner: str | None) -> list[dict[str, Any]]:
    """Every cluster generation's ledger (of one owner, or of all), as of the last pass."""
    pass_at = deps.store.guard_pass_at()
    return [carried(ledger, pass_at) for ledger in deps.store.list_ledgers(owner)]
