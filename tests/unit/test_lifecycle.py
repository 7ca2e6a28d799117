"""Lifecycle rules: what may follow what."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from lsstctl.domain.lifecycle import (
    ACTIVE,
    ALLOWED,
    CLAIMABLE_FOR_TEARDOWN,
    can_transition,
    next_poll_seconds,
    sources_of,
)
from lsstctl.domain.models import ClusterState as S


def test_deleted_is_final():
    assert ALLOWED[S.DELETED] == frozenset()


def test_every_active_state_can_be_torn_down():
    # Given any state in which the cluster may bill, When a trigger fires, Then teardown is allowed.
    for state in ACTIVE:
        assert can_transition(state, S.TEARING_DOWN)


def test_teardown_is_claimable_from_active_and_failed_but_not_twice():
    assert CLAIMABLE_FOR_TEARDOWN == ACTIVE | {S.FAILED}
    assert S.TEARING_DOWN not in CLAIMABLE_FOR_TEARDOWN


def test_launch_path_is_linear():
    assert sources_of(S.LAUNCHING) == {S.REQUESTED}
    assert sources_of(S.INSTALLING) == {S.LAUNCHING}
    assert sources_of(S.READY) == {S.INSTALLING}
    assert not can_transition(S.REQUESTED, S.READY)


def test_only_teardown_or_a_withdrawn_request_reaches_deleted():
    # A request whose workflow never started holds nothing billable (the workflow moves it
    # to launching before creating anything), so it may be withdrawn in one write.
    assert sources_of(S.DELETED) == {S.TEARING_DOWN, S.REQUESTED}
    assert not can_transition(S.LAUNCHING, S.DELETED) and not can_transition(S.READY, S.DELETED)


def test_polls_slow_down_as_the_wait_ages_up_to_a_limit():
    assert [next_poll_seconds(age, 15, 60) for age in (0, 30, 60, 100, 200, 239, 240, 3600)] == [
        15,
        15,
        15,
        25,
        50,
        59,
        60,
        60,
    ]
    assert next_poll_seconds(3600, 15, 5) == 15  # a limit below the first wait: the first wait
    assert next_poll_seconds(3600, 1, 1) == 1  # the emulator's: every second, always


def polls_until(seconds: float, first: int, most: int) -> int:
    at, polls = 0.0, 0
    while at < seconds:
        at += next_poll_seconds(at, first, most)
        polls += 1
    return polls


def test_a_fifteen_minute_launch_costs_a_third_of_the_polls_and_is_seen_at_most_a_minute_late():
    assert polls_until(900, 15, 15) == 60
    assert polls_until(900, 15, 60) == 22
    late = [polls_at - ready for ready in range(0, 3600, 7) for polls_at in [_first_poll_after(ready, 15, 60)]]
    assert max(late) <= 60


def _first_poll_after(ready: float, first: int, most: int) -> float:
    at = 0.0
    while at < ready:
        at += next_poll_seconds(at, first, most)
    return at


def test_paced_answers_carry_when_the_wait_began_and_the_next_wait():
    from lsstctl.services.remote import paced
    from lsstctl.settings import Settings

    now = [datetime(2026, 12, 6, 12, 0, tzinfo=UTC)]
    deps = SimpleNamespace(clock=lambda: now[0], settings=Settings(poll_seconds=15, poll_max_seconds=60))
    started = paced(deps, {"ready": False, "deadline": "d"}, None)  # type: ignore[arg-type]
    assert started == {"ready": False, "deadline": "d", "since": "2026-12-06T12:00:00Z", "wait": 15}
    now[0] += timedelta(minutes=2)
    polled = paced(deps, {"ready": False}, started["since"])  # type: ignore[arg-type]
    assert (polled["since"], polled["wait"]) == (started["since"], 30)
    now[0] += timedelta(minutes=30)
    assert paced(deps, {}, started["since"])["wait"] == 60  # type: ignore[arg-type]


def test_a_long_job_is_looked_at_every_five_minutes_not_every_minute():
    from lsstctl.services import jobs
    from lsstctl.settings import Settings

    now = [datetime(2026, 12, 6, 12, 0, tzinfo=UTC)]
    deps = SimpleNamespace(clock=lambda: now[0], settings=Settings(poll_max_seconds=60, job_poll_max_seconds=300))
    submitted = jobs.paced(deps, {"terminal": False}, None)  # type: ignore[arg-type]
    now[0] += timedelta(hours=2)
    assert jobs.paced(deps, {}, submitted["since"])["wait"] == 300  # type: ignore[arg-type]
    assert polls_until(2 * 3600, 15, 300) == 38 and polls_until(2 * 3600, 15, 60) == 127
