"""DynamoDB state: conditional writes decide races; terminal job states are final."""

from __future__ import annotations

import threading

import boto3
import pytest

from lsstctl.adapters.dynamodb_state import DynamoStateStore, table_definition
from lsstctl.domain.lifecycle import CLAIMABLE_FOR_TEARDOWN
from lsstctl.domain.models import Cluster, ClusterSpec, Job, JobSpec, JobState, cluster_id
from lsstctl.domain.models import ClusterState as S
from lsstctl.errors import ConflictError, InvalidTransitionError, NotFoundError

NOW = "2026-11-24T12:00:00Z"
C1 = cluster_id("alice", "c1")  # the record's key


@pytest.fixture
def store(aws) -> DynamoStateStore:
    boto3.client("dynamodb").create_table(**table_definition("state"))
    return DynamoStateStore("state")


def cluster(name: str = "c1", owner: str = "alice") -> Cluster:
    spec = ClusterSpec.model_validate(
        {"name": name, "queues": [{"name": "q", "instance_types": ["c5.large"]}], "budget_usd": 5}
    )
    return Cluster(name=name, owner=owner, spec=spec, created_at=NOW, updated_at=NOW)


def test_a_name_is_held_until_its_cluster_is_deleted(store):
    store.create_cluster(cluster())
    with pytest.raises(ConflictError):
        store.create_cluster(cluster())
    store.transition(C1, to=S.TEARING_DOWN, reason="user", allowed_from=CLAIMABLE_FOR_TEARDOWN)
    store.transition(C1, to=S.DELETED, reason="done", allowed_from=frozenset({S.TEARING_DOWN}))
    # When the name is launched again, Then it is a new generation with a fresh history.
    again = store.create_cluster(cluster())
    assert again.generation == 2 and again.state == S.REQUESTED
    assert store.get_cluster(C1).generation == 2


def test_racing_transitions_have_exactly_one_winner(store):
    store.create_cluster(cluster())
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        try:
            store.transition(
                C1,
                to=S.TEARING_DOWN,
                reason=f"t{i}",
                allowed_from=CLAIMABLE_FOR_TEARDOWN,
                updates={"teardown_execution": f"exec-{i}"},
            )
            winners.append(i)
        except InvalidTransitionError:
            losers.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    record = store.get_cluster(C1)
    assert record.teardown_execution == f"exec-{winners[0]}"
    assert [t.state for t in record.history] == ["tearing_down"]


def test_a_retried_step_finds_its_own_transition(store):
    store.create_cluster(cluster())
    first = store.transition(
        C1,
        to=S.TEARING_DOWN,
        reason="user",
        allowed_from=CLAIMABLE_FOR_TEARDOWN,
        updates={"teardown_execution": "e1"},
        or_if={"teardown_execution": "e1"},
    )
    again = store.transition(
        C1,
        to=S.TEARING_DOWN,
        reason="user",
        allowed_from=CLAIMABLE_FOR_TEARDOWN,
        updates={"teardown_execution": "e1"},
        or_if={"teardown_execution": "e1"},
    )
    assert again.history == first.history  # no second history entry
    with pytest.raises(InvalidTransitionError):
        store.transition(
            C1,
            to=S.TEARING_DOWN,
            reason="other",
            allowed_from=CLAIMABLE_FOR_TEARDOWN,
            updates={"teardown_execution": "e2"},
            or_if={"teardown_execution": "e2"},
        )


def test_lifecycle_rules_apply_even_if_the_caller_allows_more(store):
    store.create_cluster(cluster())
    with pytest.raises(InvalidTransitionError, match="requested; cannot move to ready"):
        store.transition(C1, to=S.READY, reason="skip", allowed_from=frozenset(S))


def test_owners_list_their_own_admins_list_all(store):
    store.create_cluster(cluster("a1", "alice"))
    store.create_cluster(cluster("a2", "alice"))
    store.create_cluster(cluster("b1", "bob"))
    assert sorted(c.name for c in store.list_clusters("alice")) == ["a1", "a2"]
    assert sorted(c.name for c in store.list_clusters(None)) == ["a1", "a2", "b1"]


def test_terminal_job_states_are_final(store):
    job = Job(job_id="j1", cluster="c1", owner="alice", spec=JobSpec(command="true"), created_at=NOW, updated_at=NOW)
    store.put_job(job)
    with pytest.raises(ConflictError):
        store.put_job(job)
    store.update_job(C1, "j1", state=JobState.RUNNING, reason="Slurm RUNNING")
    store.update_job(C1, "j1", state=JobState.COMPLETED, reason="Slurm COMPLETED", updates={"exit_code": "0:0"})
    late = store.update_job(C1, "j1", state=JobState.CANCELLED, reason="too late")
    assert late.state == JobState.COMPLETED and late.exit_code == "0:0"
    assert [t.state for t in store.get_job(C1, "j1").history] == ["running", "completed"]
    with pytest.raises(NotFoundError):
        store.get_job(C1, "nope")


def test_two_owners_may_hold_the_same_name(store):
    alices, bobs = store.create_cluster(cluster("c1", "alice")), store.create_cluster(cluster("c1", "bob"))
    assert alices.id != bobs.id
    store.transition(bobs.id, to=S.TEARING_DOWN, reason="user", allowed_from=CLAIMABLE_FOR_TEARDOWN)
    assert store.get_cluster(alices.id).state == S.REQUESTED  # bob's change is bob's alone
    for owner in ("alice", "bob"):
        store.put_job(
            Job(
                job_id="j1",
                cluster="c1",
                owner=owner,
                spec=JobSpec(command=f"echo {owner}"),
                created_at=NOW,
                updated_at=NOW,
            )
        )
    assert [j.spec.command for j in store.list_jobs(alices.id)] == ["echo alice"]
    assert [j.spec.command for j in store.list_jobs(bobs.id)] == ["echo bob"]
