"""DynamoDB state store: one table, optimistic concurrency on every cluster write.

Items: CLUSTER#<id>/CLUSTER, CLUSTER#<id>/JOB#<job_id>, USER#<name>/USER,
PRINCIPAL#<principal key>/PRINCIPAL (the identity registry). A cluster's key is its id
(lsstctl.domain.models.cluster_id: owner and name), so names are per owner.
Each cluster write is conditional on the version it read, so of two racing transitions
exactly one wins; the loser re-reads and fails unless the new state still allows it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient
from lsstctl.domain.chatops import ChatIdentity
from lsstctl.domain.lifecycle import ACTIVE, REUSABLE, can_transition
from lsstctl.domain.models import (
    Cluster,
    ClusterState,
    Job,
    JobState,
    Project,
    Quota,
    Transition,
    User,
    from_iso,
    iso,
    utcnow,
)
from lsstctl.domain.principals import Registration
from lsstctl.errors import ConflictError, InvalidTransitionError, NotFoundError, TransientError

BY_OWNER = "by_owner"
BY_KIND = "by_kind"
# Sparse: only clusters that may still bill carry `billing`, so the guard's read of them
# costs what they are, not what the table holds.
BY_BILLING = "by_billing"
MAX_RACE_RETRIES = 5
LIVE_STATES = frozenset(s.value for s in ACTIVE)  # a ledger measured in one of these is on by_billing


def table_definition(name: str) -> dict[str, Any]:
    """CreateTable arguments; shared by the emulator bootstrap and tests (infra has the same)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "owner", "owner_key", "kind", "billing")
        ],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BY_OWNER,
                "KeySchema": [
                    {"AttributeName": "owner", "KeyType": "HASH"},
                    {"AttributeName": "owner_key", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": BY_KIND,
                "KeySchema": [
                    {"AttributeName": "kind", "KeyType": "HASH"},
                    {"AttributeName": "pk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": BY_BILLING,
                "KeySchema": [
                    {"AttributeName": "billing", "KeyType": "HASH"},
                    {"AttributeName": "pk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    }


def _to_ddb(model: Any) -> dict[str, Any]:
    return json.loads(model.model_dump_json(), parse_float=Decimal)


def _from_ddb(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_ddb(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_ddb(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _holds(cluster: Cluster, fields: dict[str, Any] | None) -> bool:
    return not fields or all(getattr(cluster, k) == v for k, v in fields.items())


def _conditional_failed(error: ClientError) -> bool:
    return error.response["Error"]["Code"] in {"ConditionalCheckFailedException", "TransactionCanceledException"}


class DynamoStateStore:
    dynamodb = LazyClient("dynamodb", resource=True)

    def __init__(self, table_name: str, resource: Any = None, clock: Callable[[], datetime] = utcnow):
        self._table_name = table_name
        self._clock = clock  # transition times follow the control plane's clock
        self.dynamodb = resource
        self._table: Any = None

    @property
    def table(self) -> Any:
        if self._table is None:
            self._table = self.dynamodb.Table(self._table_name)
        return self._table

    # clusters -----------------------------------------------------------------------
    @staticmethod
    def _cluster_item(cluster: Cluster, version: int) -> dict[str, Any]:
        item = {
            "pk": f"CLUSTER#{cluster.id}",
            "sk": "CLUSTER",
            "kind": "CLUSTER",
            "owner": cluster.owner,
            "owner_key": f"CLUSTER#{cluster.id}",
            "state": cluster.state.value,
            "version": version,
            "doc": _to_ddb(cluster),
        }
        if cluster.state != ClusterState.DELETED:
            item["billing"] = "1"
        return item

    def _read_cluster(self, cluster_id: str) -> tuple[Cluster, int] | None:
        item = self.table.get_item(Key={"pk": f"CLUSTER#{cluster_id}", "sk": "CLUSTER"}, ConsistentRead=True).get(
            "Item"
        )
        if not item:
            return None
        return Cluster.model_validate(_from_ddb(item["doc"])), int(item["version"])

    def create_cluster(self, cluster: Cluster, before_reuse: Callable[[], None] | None = None) -> Cluster:
        """Insert a new generation; fails if the owner's name is held by a cluster not yet
        deleted. `before_reuse` runs before a deleted name is taken again (and may refuse it)."""
        existing = self._read_cluster(cluster.id)
        if existing:
            current, _ = existing
            if current.state not in REUSABLE:
                raise ConflictError(
                    f"cluster '{cluster.name}' already exists (state {current.state.value})", field="name"
                )
            if before_reuse is not None:
                before_reuse()
            cluster = cluster.model_copy(update={"generation": current.generation + 1})
        condition = Attr("pk").not_exists() | Attr("state").is_in([s.value for s in REUSABLE])
        try:
            self.table.put_item(Item=self._cluster_item(cluster, 1), ConditionExpression=condition)
        except ClientError as error:
            if _conditional_failed(error):
                raise ConflictError(f"cluster '{cluster.name}' already exists", field="name") from error
            raise
        return cluster

    def get_cluster(self, cluster_id: str) -> Cluster:
        found = self._read_cluster(cluster_id)
        if not found:
            raise NotFoundError(f"cluster '{cluster_id}' not found")
        return found[0]

    def find_cluster(self, cluster_id: str) -> Cluster | None:
        found = self._read_cluster(cluster_id)
        return found[0] if found else None

    def list_clusters(self, owner: str | None) -> list[Cluster]:
        items = self._query_index(owner, "CLUSTER")
        return [Cluster.model_validate(_from_ddb(i["doc"])) for i in items]

    def list_billing_clusters(self) -> list[Cluster]:
        """Clusters not yet deleted (they may still bill), through the sparse index."""
        kwargs: dict[str, Any] = {"IndexName": BY_BILLING, "KeyConditionExpression": Key("billing").eq("1")}
        return [Cluster.model_validate(_from_ddb(i["doc"])) for i in self._paged_query(kwargs) if i["sk"] == "CLUSTER"]

    def list_billing_cluster_ids(self) -> list[str]:
        """The ids of the clusters not yet deleted, sorted: the index's keys only (a pass over
        thousands reads each record where it is metered)."""
        kwargs: dict[str, Any] = {
            "IndexName": BY_BILLING,
            "KeyConditionExpression": Key("billing").eq("1"),
            "ProjectionExpression": "pk, sk",
        }
        return sorted(i["pk"].removeprefix("CLUSTER#") for i in self._paged_query(kwargs) if i["sk"] == "CLUSTER")

    def billing_clusters_and_ledgers(
        self, most: int | None = None
    ) -> tuple[list[Cluster], dict[tuple[str, int], dict[str, Any]]] | None:
        """The clusters not yet deleted, sorted by id, and the ledgers of the live ones, in one
        paged read of the sparse index (a ledger is on it while its cluster is live: `put_ledger`),
        1 MB a page: a pass over a thousand clusters in a few calls, not two per hundred. Index
        reads are eventually consistent (what the pass acts on is written conditionally). None
        as soon as there are more than `most` clusters (the pass is then shared)."""
        kwargs: dict[str, Any] = {"IndexName": BY_BILLING, "KeyConditionExpression": Key("billing").eq("1")}
        clusters: list[Cluster] = []
        ledgers: dict[tuple[str, int], dict[str, Any]] = {}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                cluster_id, sk = item["pk"].removeprefix("CLUSTER#"), item["sk"]
                if sk == "CLUSTER":
                    cluster = Cluster.model_validate(_from_ddb(item["doc"]))
                    if cluster.state != ClusterState.DELETED:
                        clusters.append(cluster)
                elif sk.startswith("COST#"):
                    ledgers[(cluster_id, int(sk.removeprefix("COST#")))] = json.loads(item["ledger"])
            if most is not None and len(clusters) > most:
                return None
            if "LastEvaluatedKey" not in page:
                return sorted(clusters, key=lambda c: c.id), ledgers
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get_billing_clusters(self, cluster_ids: list[str]) -> list[Cluster]:
        """These clusters' records (strongly consistent, 100 to a call), those not yet deleted."""
        items = self._batch_get([(f"CLUSTER#{c}", "CLUSTER") for c in dict.fromkeys(cluster_ids)], "doc")
        found = (Cluster.model_validate(_from_ddb(item["doc"])) for item in items.values())
        return sorted((c for c in found if c.state != ClusterState.DELETED), key=lambda c: c.id)

    def _paged_query(self, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.table.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # spend ledger ---------------------------------------------------------------------
    # A ledger is read and written whole, every minute, and a big cluster's breakdown has a
    # line per node: it is kept as one JSON string, not a nested map of attributes.
    def get_ledger(self, cluster_id: str, generation: int) -> dict[str, Any] | None:
        item = self.table.get_item(
            Key={"pk": f"CLUSTER#{cluster_id}", "sk": f"COST#{generation}"}, ConsistentRead=True
        ).get("Item")
        return json.loads(item["ledger"]) if item else None

    def get_ledgers(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """Many ledgers in pages of 100 (BatchGetItem, strongly consistent); missing ones are
        left out."""
        wanted = [(f"CLUSTER#{c}", f"COST#{g}") for c, g in dict.fromkeys(keys)]
        return {
            (pk.removeprefix("CLUSTER#"), int(sk.removeprefix("COST#"))): json.loads(item["ledger"])
            for (pk, sk), item in self._batch_get(wanted, "ledger").items()
        }

    def _batch_get(self, keys: list[tuple[str, str]], attribute: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Items by (pk, sk), 100 to a call (BatchGetItem, strongly consistent), with their
        keys and `attribute` only. Keys DynamoDB leaves unprocessed are asked again, with a
        short backoff."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        # The table's own client: it (de)serialises attribute values as the table does.
        client, name = self.table.meta.client, self.table.name
        for start in range(0, len(keys), 100):
            wanted = [{"pk": pk, "sk": sk} for pk, sk in keys[start : start + 100]]
            for attempt in range(8):
                page = client.batch_get_item(
                    RequestItems={
                        name: {
                            "Keys": wanted,
                            "ConsistentRead": True,
                            "ProjectionExpression": "pk, sk, #a",
                            "ExpressionAttributeNames": {"#a": attribute},
                        }
                    }
                )
                for item in page.get("Responses", {}).get(name, []):
                    found[(item["pk"], item["sk"])] = item
                wanted = page.get("UnprocessedKeys", {}).get(name, {}).get("Keys", [])
                if not wanted:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise TransientError(f"DynamoDB left {len(wanted)} items unread after 8 tries")
        return found

    def put_ledger(self, cluster_id: str, generation: int, owner: str, ledger: dict[str, Any]) -> None:
        """Keep a ledger. One measured while its cluster was live (its `state`: requested to
        ready) is on the billing index, read with the records (`billing_clusters_and_ledgers`);
        the next one written (a teardown's measurements) leaves it, like its deleted record."""
        item = {
            "pk": f"CLUSTER#{cluster_id}",
            "sk": f"COST#{generation}",
            "kind": "COST",
            "owner": owner,
            "owner_key": f"COST#{cluster_id}#{generation}",
            "ledger": json.dumps(ledger),
        }
        if ledger.get("state") in LIVE_STATES:
            item["billing"] = "1"
        self.table.put_item(Item=item)

    def unlist_ledger(self, cluster_id: str, generation: int) -> None:
        """Take a ledger off the billing index (its cluster is no longer live there)."""
        try:
            self.table.update_item(
                Key={"pk": f"CLUSTER#{cluster_id}", "sk": f"COST#{generation}"},
                UpdateExpression="REMOVE billing",
                ConditionExpression=Attr("pk").exists(),  # never makes one
            )
        except ClientError as error:
            if not _conditional_failed(error):
                raise

    def list_ledgers(self, owner: str | None) -> list[dict[str, Any]]:
        """Every cluster generation's ledger (of one owner, or of all)."""
        return [json.loads(i["ledger"]) for i in self._query_index(owner, "COST")]

    def record_guard_pass(self, at: str) -> None:
        """When the guard last measured every live cluster (ledgers unchanged since their own
        measurement hold as of then). A late, older pass never moves it back."""
        try:
            self.table.put_item(
                Item={"pk": "GUARD", "sk": "PASS", "kind": "GUARD", "at": at},
                ConditionExpression=Attr("at").not_exists() | Attr("at").lt(at),
            )
        except ClientError as error:
            if not _conditional_failed(error):
                raise

    def guard_pass_at(self) -> str | None:
        item = self.table.get_item(Key={"pk": "GUARD", "sk": "PASS"}, ConsistentRead=True).get("Item")
        return str(item["at"]) if item else None

    def claim_warning(self, cluster_id: str, generation: int, threshold: int) -> bool:
        """Record that the owner was warned at `threshold` percent; False if already done
        (so repeated ticks and duplicate triggers warn once)."""
        try:
            self.table.put_item(
                Item={"pk": f"CLUSTER#{cluster_id}", "sk": f"WARN#{generation}#{threshold:03d}", "kind": "WARN"},
                ConditionExpression=Attr("pk").not_exists(),
            )
            return True
        except ClientError as error:
            if _conditional_failed(error):
                return False
            raise

    # reconciler ---------------------------------------------------------------------
    def record_reconciliation(self, at: str, findings: list[dict[str, Any]], keep_days: int = 14) -> None:
        """What one reconciler pass found and did (kept for `keep_days`; DynamoDB's TTL)."""
        expires = int(from_iso(at).timestamp()) + keep_days * 86400
        self.table.put_item(
            Item={
                "pk": "RECONCILER",
                "sk": f"RUN#{at}#{uuid.uuid4().hex[:8]}",
                "kind": "RECONCILE",
                "at": at,
                "findings": json.dumps(findings),
                "expires_at": expires,
            }
        )

    def reconciliations(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest passes, newest first: {"at", "findings"}."""
        page = self.table.query(
            KeyConditionExpression=Key("pk").eq("RECONCILER") & Key("sk").begins_with("RUN#"),
            ScanIndexForward=False,
            Limit=limit,
            ConsistentRead=True,
        )
        return [{"at": i["at"], "findings": json.loads(i["findings"])} for i in page.get("Items", [])]

    # teardown timing ------------------------------------------------------------------
    def record_teardown_timing(self, stop_compute_seconds: float, total_seconds: float, keep: int = 20) -> None:
        for _ in range(MAX_RACE_RETRIES):
            item = self.table.get_item(Key={"pk": "STATS", "sk": "TEARDOWN"}, ConsistentRead=True).get("Item")
            samples = _from_ddb(item["samples"]) if item else []
            version = int(item["version"]) if item else 0
            samples = (samples + [[stop_compute_seconds, total_seconds]])[-keep:]
            condition = Attr("version").eq(version) if item else Attr("pk").not_exists()
            try:
                self.table.put_item(
                    Item={
                        "pk": "STATS",
                        "sk": "TEARDOWN",
                        "version": version + 1,
                        "samples": json.loads(json.dumps(samples), parse_float=Decimal),
                    },
                    ConditionExpression=condition,
                )
                return
            except ClientError as error:
                if not _conditional_failed(error):
                    raise

    def teardown_timings(self) -> list[tuple[float, float]]:
        item = self.table.get_item(Key={"pk": "STATS", "sk": "TEARDOWN"}, ConsistentRead=True).get("Item")
        return [tuple(s) for s in _from_ddb(item["samples"])] if item else []

    def _query_index(self, owner: str | None, kind: str) -> list[dict[str, Any]]:
        if owner is None:
            kwargs: dict[str, Any] = {"IndexName": BY_KIND, "KeyConditionExpression": Key("kind").eq(kind)}
        else:
            kwargs = {
                "IndexName": BY_OWNER,
                "KeyConditionExpression": Key("owner").eq(owner) & Key("owner_key").begins_with(f"{kind}#"),
            }
        return self._paged_query(kwargs)

    def _write_versioned(self, cluster: Cluster, version: int) -> bool:
        try:
            self.table.put_item(
                Item=self._cluster_item(cluster, version + 1),
                ConditionExpression=Attr("version").eq(version),
            )
            return True
        except ClientError as error:
            if _conditional_failed(error):
                return False
            raise

    def transition(
        self,
        cluster_id: str,
        *,
        to: ClusterState,
        reason: str,
        allowed_from: frozenset[ClusterState],
        updates: dict[str, Any] | None = None,
        or_if: dict[str, Any] | None = None,
        only_if: dict[str, Any] | None = None,
    ) -> Cluster:
        """Move `cluster_id` to `to` if its state is in allowed_from (and the lifecycle allows it).

        `or_if`: the transition is already done if the record is in `to` and these fields
        match (a retried step sees its own earlier write and succeeds without a second one).
        `only_if`: these fields must still hold these values (what the caller decided on).
        """
        for _ in range(MAX_RACE_RETRIES):
            found = self._read_cluster(cluster_id)
            if not found:
                raise NotFoundError(f"cluster '{cluster_id}' not found")
            current, version = found
            if or_if is not None and current.state == to and all(getattr(current, k) == v for k, v in or_if.items()):
                return current
            if (
                current.state not in allowed_from
                or not can_transition(current.state, to)
                or not _holds(current, only_if)
            ):
                raise InvalidTransitionError(
                    f"cluster '{cluster_id}' is {current.state.value}; cannot move to {to.value}",
                    details={"state": current.state.value},
                )
            now = iso(self._clock())
            changed = current.model_copy(
                update={
                    **(updates or {}),
                    "state": to,
                    "updated_at": now,
                    "history": [*current.history, Transition(state=to.value, at=now, reason=reason)],
                }
            )
            if self._write_versioned(changed, version):
                return changed
        raise TransientError(f"cluster '{cluster_id}' is changing too fast; try again")

    def update_cluster(
        self, cluster_id: str, updates: dict[str, Any], only_if: dict[str, Any] | None = None
    ) -> Cluster:
        """Write fields of the record (`only_if`: fields that must still hold these values)."""
        for _ in range(MAX_RACE_RETRIES):
            found = self._read_cluster(cluster_id)
            if not found:
                raise NotFoundError(f"cluster '{cluster_id}' not found")
            current, version = found
            if not _holds(current, only_if):
                raise ConflictError(f"cluster '{cluster_id}' changed meanwhile", details={"state": current.state.value})
            changed = current.model_copy(update={**updates, "updated_at": iso(self._clock())})
            if self._write_versioned(changed, version):
                return changed
        raise TransientError(f"cluster '{cluster_id}' is changing too fast; try again")

    # jobs ---------------------------------------------------------------------------
    def put_job(self, job: Job) -> Job:
        try:
            self.table.put_item(
                Item={"pk": f"CLUSTER#{job.cluster_id}", "sk": f"JOB#{job.job_id}", "kind": "JOB", "doc": _to_ddb(job)},
                ConditionExpression=Attr("sk").not_exists(),
            )
        except ClientError as error:
            if _conditional_failed(error):
                raise ConflictError(f"job '{job.job_id}' already exists") from error
            raise
        return job

    def get_job(self, cluster_id: str, job_id: str) -> Job:
        item = self.table.get_item(Key={"pk": f"CLUSTER#{cluster_id}", "sk": f"JOB#{job_id}"}, ConsistentRead=True).get(
            "Item"
        )
        if not item:
            raise NotFoundError(f"job '{job_id}' not found")
        return Job.model_validate(_from_ddb(item["doc"]))

    def list_jobs(self, cluster_id: str) -> list[Job]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"CLUSTER#{cluster_id}") & Key("sk").begins_with("JOB#"),
            "ConsistentRead": True,
        }
        jobs: list[Job] = []
        while True:
            page = self.table.query(**kwargs)
            jobs += [Job.model_validate(_from_ddb(i["doc"])) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return jobs
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def update_job(
        self, cluster_id: str, job_id: str, *, state: JobState, reason: str, updates: dict[str, Any] | None = None
    ) -> Job:
        """Record a job's state. A terminal state is final: later writes cannot revive it."""
        current = self.get_job(cluster_id, job_id)
        if current.state.terminal:
            return current
        now = iso(self._clock())
        history = current.history
        if state != current.state:
            history = [*history, Transition(state=state.value, at=now, reason=reason)]
        changed = current.model_copy(update={**(updates or {}), "state": state, "updated_at": now, "history": history})
        try:
            self.table.put_item(
                Item={"pk": f"CLUSTER#{cluster_id}", "sk": f"JOB#{job_id}", "kind": "JOB", "doc": _to_ddb(changed)},
                ConditionExpression=Attr("doc.state").eq(current.state.value),
            )
        except ClientError as error:
            if _conditional_failed(error):
                return self.get_job(cluster_id, job_id)
            raise
        return changed

    # users --------------------------------------------------------------------------
    def put_user(self, user: User) -> User:
        self.table.put_item(
            Item={
                "pk": f"USER#{user.name}",
                "sk": "USER",
                "kind": "USER",
                "owner": user.owner,
                "owner_key": f"USER#{user.name}",
                "doc": _to_ddb(user),
            }
        )
        return user

    def get_user(self, name: str) -> User | None:
        item = self.table.get_item(Key={"pk": f"USER#{name}", "sk": "USER"}, ConsistentRead=True).get("Item")
        return User.model_validate(_from_ddb(item["doc"])) if item else None

    def list_users(self, owner: str | None) -> list[User]:
        return [User.model_validate(_from_ddb(i["doc"])) for i in self._query_index(owner, "USER")]

    # the identity registry --------------------------------------------------------------
    def get_registration(self, key: str) -> Registration | None:
        item = self.table.get_item(Key={"pk": f"PRINCIPAL#{key}", "sk": "PRINCIPAL"}, ConsistentRead=True).get("Item")
        return Registration.model_validate(_from_ddb(item["doc"])) if item else None

    def put_registration(self, registration: Registration) -> None:
        owner = registration.owner or "*"
        self.table.put_item(
            Item={
                "pk": f"PRINCIPAL#{registration.key}",
                "sk": "PRINCIPAL",
                "kind": "PRINCIPAL",
                "owner": owner,
                "owner_key": f"PRINCIPAL#{registration.key}",
                "doc": _to_ddb(registration),
            }
        )

    def list_registrations(self) -> list[Registration]:
        return [Registration.model_validate(_from_ddb(i["doc"])) for i in self._query_index(None, "PRINCIPAL")]

    def delete_registration(self, key: str) -> None:
        self.table.delete_item(Key={"pk": f"PRINCIPAL#{key}", "sk": "PRINCIPAL"})

    # ChatOps: Slack users, owners' channels ------------------------------
    def get_chat_identity(self, team_id: str, user_id: str) -> ChatIdentity | None:
        item = self.table.get_item(Key={"pk": f"CHAT#{team_id}#{user_id}", "sk": "CHAT"}, ConsistentRead=True).get(
            "Item"
        )
        return ChatIdentity.model_validate(_from_ddb(item["doc"])) if item else None

    def put_chat_identity(self, identity: ChatIdentity) -> None:
        self.table.put_item(
            Item={
                "pk": f"CHAT#{identity.key}",
                "sk": "CHAT",
                "kind": "CHAT",
                "owner": identity.owner,
                "owner_key": f"CHAT#{identity.key}",
                "doc": _to_ddb(identity),
            }
        )

    def list_chat_identities(self, owner: str | None) -> list[ChatIdentity]:
        return [ChatIdentity.model_validate(_from_ddb(i["doc"])) for i in self._query_index(owner, "CHAT")]

    def delete_chat_identity(self, team_id: str, user_id: str) -> bool:
        old = self.table.delete_item(Key={"pk": f"CHAT#{team_id}#{user_id}", "sk": "CHAT"}, ReturnValues="ALL_OLD")
        return "Attributes" in old

    def get_chat_channel(self, owner: str) -> str | None:
        item = self.table.get_item(Key={"pk": f"CHANNEL#{owner}", "sk": "CHANNEL"}, ConsistentRead=True).get("Item")
        return str(item["webhook_url"]) if item else None

    def put_chat_channel(self, owner: str, webhook_url: str, by: str, at: str) -> None:
        self.table.put_item(
            Item={
                "pk": f"CHANNEL#{owner}",
                "sk": "CHANNEL",
                "kind": "CHANNEL",
                "owner": owner,
                "owner_key": f"CHANNEL#{owner}",
                "webhook_url": webhook_url,
                "set_by": by,
                "set_at": at,
            }
        )

    def claim_once(self, key: str, ttl_seconds: int) -> bool:
        """True for the first claim of `key` (a delivery to do once); False after."""
        try:
            self.table.put_item(
                Item={
                    "pk": key,
                    "sk": "ONCE",
                    "kind": "ONCE",
                    "expires_at": int(self._clock().timestamp()) + ttl_seconds,
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
            return True
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def release_once(self, key: str) -> None:
        self.table.delete_item(Key={"pk": key, "sk": "ONCE"})

    # quotas ---------------------------------------------------------------------------
    # projects (grants) ----------------------------------------------------------------
    def get_project(self, name: str) -> Project | None:
        item = self.table.get_item(Key={"pk": f"PROJECT#{name}", "sk": "PROJECT"}, ConsistentRead=True).get("Item")
        return Project.model_validate(_from_ddb(item["doc"])) if item else None

    def put_project(self, project: Project) -> None:
        self.table.put_item(
            Item={"pk": f"PROJECT#{project.name}", "sk": "PROJECT", "kind": "PROJECT", "doc": _to_ddb(project)}
        )

    def list_projects(self) -> list[Project]:
        return [Project.model_validate(_from_ddb(i["doc"])) for i in self._query_index(None, "PROJECT")]

    def get_quota(self, owner: str) -> Quota | None:
        item = self.table.get_item(Key={"pk": f"QUOTA#{owner}", "sk": "QUOTA"}, ConsistentRead=True).get("Item")
        return Quota.model_validate(_from_ddb(item["doc"])) if item else None

    def put_quota(self, quota: Quota) -> None:
        self.table.put_item(
            Item={
                "pk": f"QUOTA#{quota.owner}",
                "sk": "QUOTA",
                "kind": "QUOTA",
                "owner": quota.owner,
                "owner_key": f"QUOTA#{quota.owner}",
                "doc": _to_ddb(quota),
            }
        )

    # stack cache ----------------------------------------------------------------------
    def record_stack_cache_use(self, tag: str, *, file_system_id: str, at: str, install_seconds: float | None) -> None:
        """One cluster's use of a cached tag: an install (with how long it took) or a hit.
        One UpdateItem with ADD: concurrent launches never lose a count."""
        installed = install_seconds is not None
        self.table.update_item(
            Key={"pk": "STACKCACHE", "sk": f"TAG#{tag}"},
            UpdateExpression="ADD installs :i, hits :h, install_seconds_total :s "
            "SET kind = :kind, tag = :tag, file_system_id = :fs, last_used_at = :at",
            ExpressionAttributeValues={
                ":i": 1 if installed else 0,
                ":h": 0 if installed else 1,
                ":s": Decimal(str(round(install_seconds or 0.0, 1))),
                ":kind": "STACKCACHE",
                ":tag": tag,
                ":fs": file_system_id,
                ":at": at,
            },
        )

    def list_stack_cache_tags(self) -> list[dict[str, Any]]:
        """Per cached tag: installs, hits, seconds spent installing, file system, last use."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq("STACKCACHE"), "ConsistentRead": True}
        while True:
            page = self.table.query(**kwargs)
            items += [
                {
                    "tag": i["tag"],
                    "file_system_id": i["file_system_id"],
                    "last_used_at": i["last_used_at"],
                    "installs": int(i.get("installs", 0)),
                    "hits": int(i.get("hits", 0)),
                    "install_seconds_total": float(i.get("install_seconds_total", 0)),
                }
                for i in page["Items"]
            ]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def forget_stack_cache(self, file_system_id: str) -> None:
        for item in self.list_stack_cache_tags():
            if item["file_system_id"] == file_system_id:
                self.table.delete_item(Key={"pk": "STACKCACHE", "sk": f"TAG#{item['tag']}"})

    # request rate -----------------------------------------------------------------------
    def count_request(self, owner: str, window: str, limit: int, expires_at: int) -> bool:
        """Count one request in the owner's window; False (nothing counted) once `limit`
        were counted there. One conditional write: racing requests cannot both take the last."""
        try:
            self.table.update_item(
                Key={"pk": f"RATE#{owner}", "sk": window},
                UpdateExpression="ADD n :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeValues={":one": 1, ":limit": limit, ":expires": expires_at},
            )
            return True
        except ClientError as error:
            if _conditional_failed(error):
                return False
            raise
