"""Cluster lifecycle rules: which transitions exist, which states still bill, and how a
cluster's end stopped its jobs."""

from __future__ import annotations

from lsstctl.domain.models import Cluster
from lsstctl.domain.models import ClusterState as S

ALLOWED: dict[S, frozenset[S]] = {
    # requested -> deleted: a launch withdrawn before anything was created (its workflow
    # could not start), in one write.
    S.REQUESTED: frozenset({S.LAUNCHING, S.TEARING_DOWN, S.DELETED}),
    S.LAUNCHING: frozenset({S.INSTALLING, S.TEARING_DOWN}),
    S.INSTALLING: frozenset({S.READY, S.TEARING_DOWN}),
    S.READY: frozenset({S.TEARING_DOWN}),
    # `failed` means a teardown could not finish and may hold resources: it can be retried.
    S.TEARING_DOWN: frozenset({S.DELETED, S.FAILED}),
    S.FAILED: frozenset({S.TEARING_DOWN}),
    S.DELETED: frozenset(),
}

ACTIVE = frozenset({S.REQUESTED, S.LAUNCHING, S.INSTALLING, S.READY})
# States from which a new teardown may claim the cluster.
CLAIMABLE_FOR_TEARDOWN = frozenset(s for s, nxt in ALLOWED.items() if S.TEARING_DOWN in nxt)
# A name may be launched again once its previous generation is gone.
REUSABLE = frozenset({S.DELETED})


def sources_of(target: S) -> frozenset[S]:
    """States from which `target` can be reached (used as a DynamoDB condition)."""
    return frozenset(s for s, nxt in ALLOWED.items() if target in nxt)


def can_transition(current: S, target: S) -> bool:
    return target in ALLOWED[current]


def stopped_reason(cluster: Cluster, job_id: str) -> str | None:
    """Why a job that was open when its cluster ended stopped (None: it was not)."""
    ending = cluster.graceful_end or {}
    why = cluster.teardown_reason or "teardown"
    if job_id in ending.get("signalled", []):
        if ending.get("reached"):
            return f"stopped at the cluster's end ({why}): signalled SIGTERM, {ending['grace_seconds']} s grace"
        return f"stopped at the cluster's end ({why}): the head node could not be signalled"
    if job_id in ending.get("held", []):
        return f"held at the cluster's end ({why}): never started"
    return None


def next_poll_seconds(age_seconds: float, first: int, most: int) -> int:
    """How long a workflow waits before asking again about something it began `age_seconds`
    ago (a launch, an install, an archive, a deletion, a job): `first` at the start, then a
    quarter of the age, never more than `most`. A 15-minute launch polled every 15 s costs 60
    polls; paced this way (15 s, at most 60 s) it costs 21 and is seen ready at most 60 s late."""
    most = max(first, most)
    return int(min(most, max(first, age_seconds // 4)))
