"""POST /chatops/slack through the routes (chalice.test.Client on moto), requests signed with
slack_sdk's own signer: valid ones work, anything forged, stale or unsigned is 401 and leaves
no trace, arbitrary text never gets a 5xx; the workflow's step answers at the response URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from tests.integration.api_contract import ADMIN, OWNER, REGION, SLACK_SECRET, Api, cluster_spec, make_ready
from tests.slack_inbox import SlackInbox

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

TEAM, USER = "T0TEAM", "U0ALICE"
RESPONSE_URL = "https://hooks.slack.com/commands/T0TEAM/1234/abcd"


def form(text: str, *, user: str = USER, trigger: str = "1.2.abc") -> bytes:
    return urlencode(
        {
            "token": "deprecated",
            "team_id": TEAM,
            "user_id": user,
            "user_name": "alice",
            "channel_id": "C0CHAN",
            "command": "/lsst",
            "text": text,
            "response_url": RESPONSE_URL,
            "trigger_id": trigger,
        }
    ).encode()


def signed(body: bytes, *, secret: str = SLACK_SECRET, at: float | None = None) -> dict[str, str]:
    """Headers as Slack sends them, made by slack_sdk's own signer."""
    timestamp = str(int(time.time() if at is None else at))
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body.decode()),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash(api: Api, body: bytes, headers: dict[str, str] | None) -> Any:
    return api.call(
        "POST",
        "/chatops/slack",
        raw=body,
        who=None,
        headers=headers if headers is not None else {"Content-Type": "application/x-www-form-urlencoded"},
    )


def chatops_executions() -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = next(m for m in sfn.list_state_machines()["stateMachines"] if m["name"] == "lsstctl-chatops")
    return sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]


def state_items() -> list[str]:
    from lsstctl import wiring

    table = wiring.deps().settings.state_table
    return sorted(
        json.dumps(i, sort_keys=True, default=str)
        for i in boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
    )


@pytest.fixture
def linked(api: Api) -> Api:
    reply = api.call("PUT", "/chatops/identities", body={"team_id": TEAM, "user_id": USER, "owner": OWNER}, who=ADMIN)
    assert reply.status == 200 and reply.body["owner"] == OWNER
    return api


def test_a_signed_command_from_a_linked_user_is_acknowledged_and_started_once(linked: Api) -> None:
    body = form("up demo size=small budget=25")
    reply = slash(linked, body, signed(body))
    assert reply.status == 200 and reply.body == {
        "response_type": "ephemeral",
        "text": "On it: `/lsst up demo size=small budget=25` (I'll answer here).",
    }
    # Slack repeats a command it thinks went unanswered: the same trigger starts nothing new.
    assert slash(linked, body, signed(body)).status == 200
    executions = chatops_executions()
    assert [e["name"] for e in executions] == ["slack-12abc"]
    started = json.loads(
        boto3.client("stepfunctions", region_name=REGION).describe_execution(
            executionArn=executions[0]["executionArn"]
        )["input"]
    )
    assert started["owner"] == OWNER and started["request"]["text"] == "up demo size=small budget=25"


def test_reads_are_answered_at_once(linked: Api) -> None:
    linked.call("POST", "/clusters", body=cluster_spec("demo"))
    make_ready("demo")
    body = form("status")
    reply = slash(linked, body, signed(body))
    assert reply.status == 200 and "`demo`: *ready*" in reply.body["text"]
    body = form("quote small 10", trigger="2")
    text = slash(linked, body, signed(body)).body["text"]
    assert text.startswith("`small` for 10 h: $") and "at full size" in text
    body = form("status nope", trigger="3")
    assert "not found" in slash(linked, body, signed(body)).body["text"]
    body = form("launch everything", trigger="4")
    assert "unknown command" in slash(linked, body, signed(body)).body["text"]
    assert chatops_executions() == []


def test_an_unlinked_user_is_refused_politely(linked: Api) -> None:
    body = form("up demo", user="U0STRANGER")
    reply = slash(linked, body, signed(body))
    assert reply.status == 200 and "not linked to a control-plane owner" in reply.body["text"]
    assert chatops_executions() == []


@pytest.mark.parametrize(
    "case",
    ["tampered body", "wrong secret", "stale", "future", "no signature", "no timestamp", "no headers", "not a number"],
)
def test_a_forged_stale_or_unsigned_request_is_401_and_leaves_no_trace(linked: Api, case: str) -> None:
    body = form("down demo")
    headers = signed(body)
    if case == "tampered body":
        body = form("down everything-else")
    elif case == "wrong secret":
        headers = signed(body, secret="not-the-apps-secret")
    elif case == "stale":
        headers = signed(body, at=time.time() - 360)
    elif case == "future":
        # Slack's window is 300 s either way; a margin of a minute keeps a slow machine (the time
        # between signing and checking) from bringing a future stamp back inside it.
        headers = signed(body, at=time.time() + 360)
    elif case == "no signature":
        headers.pop("X-Slack-Signature")
    elif case == "no timestamp":
        headers.pop("X-Slack-Request-Timestamp")
    elif case == "no headers":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif case == "not a number":
        headers["X-Slack-Request-Timestamp"] = "soon"
    before = state_items()
    reply = slash(linked, body, headers)
    assert reply.status == 401 and reply.body["error"]["code"] == "unauthenticated"
    assert state_items() == before and chatops_executions() == []


def test_a_request_within_five_minutes_is_accepted(linked: Api) -> None:
    body = form("help")
    assert slash(linked, body, signed(body, at=time.time() - 290)).status == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_command_text_gets_an_answer_never_a_5xx(linked: Api, text: str) -> None:
    body = form(text, trigger=f"t{abs(hash(text))}")
    reply = slash(linked, body, signed(body))
    assert reply.status == 200 and reply.body["response_type"] in ("ephemeral", "in_channel") and reply.body["text"]


# The workflow's step -------------------------------------------------------------------
@pytest.fixture
def inbox() -> Iterator[SlackInbox]:
    inbox = SlackInbox()
    yield inbox
    inbox.close()


def test_the_step_does_the_command_and_answers_at_the_response_url(
    linked: Api, inbox: SlackInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsstctl import wiring
    from lsstctl.services import audit, chatops
    from lsstctl.services.identity import Principal

    linked.call("POST", "/clusters", body=cluster_spec("demo"))
    make_ready("demo")
    request = {
        "team_id": TEAM,
        "user_id": USER,
        "text": "down demo",
        "response_url": inbox.url + "/r/1",
        "user_name": "alice",
        "channel_id": "C0CHAN",
        "trigger_id": "9",
        "command": "/lsst",
    }
    inbox.failures = [503]  # Slack has a bad moment: slack_sdk's retry handler tries again
    assert chatops.run_command(wiring.deps(), request, OWNER, False, "slack-9") == {"outcome": "ok"}
    assert inbox.texts("/r/1") == [
        "⏹ Tearing down `demo`: compute stops, outputs are archived, then it is deleted. "
        "I'll post the final cost to your channel."
    ]
    assert linked.call("GET", "/clusters/{name}", name="demo").body["state"] == "tearing_down"

    # Someone else's cluster is not theirs to end: the refusal is the answer.
    linked.call("POST", "/clusters", body=cluster_spec("theirs"), who="bob")
    request = {**request, "text": "down theirs", "response_url": inbox.url + "/r/2"}
    assert chatops.run_command(wiring.deps(), request, OWNER, False, "slack-10") == {"outcome": "error: not_found"}
    assert "✗ `/lsst down theirs`: " in inbox.texts("/r/2")[0]
    trail = audit.query(wiring.deps(), Principal("admin", is_admin=True), action="slack:")["entries"]
    outcomes = [(e["command"], e["outcome"], e["who"], e["owner"]) for e in trail]
    assert ("down demo", "ok", f"slack:{TEAM}:{USER}", OWNER) in outcomes
    assert ("down theirs", "error: not_found", f"slack:{TEAM}:{USER}", OWNER) in outcomes


def test_notifications_go_to_the_owners_channel(
    linked: Api, inbox: SlackInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsstctl import wiring
    from lsstctl.services import chatops

    monkeypatch.setenv("LSSTCTL_CHAT_URL_PREFIX", "http://127.0.0.1:")
    wiring.reset()
    assert linked.call("PUT", "/chatops/channel", body={"webhook_url": inbox.url + "/hook/alice"}).status == 200
    event = {
        "detail-type": "Teardown Completed",
        "detail": {
            "cluster": "demo",
            "owner": OWNER,
            "reason": "budget",
            "outcome": "deleted",
            "final_spend_usd": 24.1,
            "budget_usd": 25,
        },
    }
    assert chatops.notify(wiring.deps(), event) == {"sent": True}
    assert inbox.texts("/hook/alice") == [
        "🧹 `demo` was deleted (its budget would have been exceeded); final cost $24.10 of $25.00."
    ]
    assert chatops.notify(wiring.deps(), {**event, "detail": {**event["detail"], "owner": "bob"}}) == {
        "sent": False,
        "why": "bob has no channel",
    }
    # A channel URL that is not Slack's (here: not this machine's) is refused by name.
    reply = linked.call("PUT", "/chatops/channel", body={"webhook_url": "https://evil.example/hook"})
    assert reply.status == 400 and reply.body["error"]["field"] == "webhook_url"


def test_a_retried_step_does_the_command_once(linked: Api, inbox: SlackInbox) -> None:
    from lsstctl import wiring
    from lsstctl.services import chatops

    request = {
        "team_id": TEAM,
        "user_id": USER,
        "text": "up twice size=small budget=30",
        "response_url": inbox.url + "/r/up",
        "user_name": "alice",
        "channel_id": "C0CHAN",
        "trigger_id": "7",
        "command": "/lsst",
    }
    first = chatops.run_command(wiring.deps(), request, OWNER, False, "slack-7")
    # Step Functions runs the step again (say the answer's post timed out on our side).
    second = chatops.run_command(wiring.deps(), request, OWNER, False, "slack-7")
    assert first == second == {"outcome": "ok"}
    answers = inbox.texts("/r/up")
    assert len(answers) == 2 and answers[0] == answers[1] and answers[0].startswith("🚀 Launching `twice`")
    assert [c["name"] for c in linked.call("GET", "/clusters").body["clusters"]] == ["twice"]


def test_an_event_delivered_twice_is_posted_once_and_a_failed_post_is_retried(
    linked: Api, inbox: SlackInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsstctl import wiring
    from lsstctl.errors import TransientError
    from lsstctl.services import chatops

    monkeypatch.setenv("LSSTCTL_CHAT_URL_PREFIX", "http://127.0.0.1:")
    wiring.reset()
    linked.call("PUT", "/chatops/channel", body={"webhook_url": inbox.url + "/hook/alice"})
    event = {
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Cluster State Changed",
        "detail": {"cluster": "demo", "owner": OWNER, "state": "ready"},
    }
    inbox.failures = [500, 500, 500]  # Slack down through slack_sdk's retries: Lambda will retry the event
    with pytest.raises(TransientError):
        chatops.notify(wiring.deps(), event)
    assert inbox.texts() == []
    assert chatops.notify(wiring.deps(), event) == {"sent": True}
    assert chatops.notify(wiring.deps(), event) == {"sent": False, "why": "already sent"}
    assert len(inbox.texts("/hook/alice")) == 1
