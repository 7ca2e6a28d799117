"""Lifecycle rules: what may follow what."""

from lsstctl.domain.lifecycle import ACTIVE, ALLOWED, CLAIMABLE_FOR_TEARDOWN, can_transition, sources_of
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
