"""The `/lsst` grammar and the messages people read (lsstctl.domain.chatops and the pure
parts of lsstctl.services.chatops): every malformed command gets one short usage line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsstctl.domain.chatops import USAGE, Command, UsageError, parse
from lsstctl.services.chatops import notification_text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", Command("help")),
        ("help", Command("help")),
        ("up demo", Command("up", name="demo")),
        (
            "up demo size=medium budget=30 idle=15 lifetime=6 stack=w_2026_48",
            Command(
                "up",
                name="demo",
                options={"size": "medium", "budget": "30", "idle": "15", "lifetime": "6", "stack": "w_2026_48"},
            ),
        ),
        ("UP demo", Command("up", name="demo")),
        ("status", Command("status")),
        ("status demo", Command("status", name="demo")),
        (
            "run demo -- pipetask run -b repo -p 'DRP.yaml#isr' && echo done",
            Command("run", name="demo", command="pipetask run -b repo -p 'DRP.yaml#isr' && echo done"),
        ),
        ("jobs demo", Command("jobs", name="demo")),
        ("cancel demo j-20261205-abc123", Command("cancel", name="demo", job="j-20261205-abc123")),
        ("cost", Command("cost")),
        ("quote small 2.5", Command("quote", size="small", hours=2.5)),
        ("down demo", Command("down", name="demo")),
    ],
)
def test_commands(text: str, expected: Command) -> None:
    assert parse(text) == expected


def test_an_up_becomes_the_http_apis_spec() -> None:
    assert parse("up demo size=medium budget=30 idle=15").spec() == {
        "name": "demo",
        "preset": "medium",
        "budget_usd": "30",
        "idle_minutes": "15",
    }
    assert parse("up demo").spec() == {"name": "demo", "preset": "small"}


@pytest.mark.parametrize(
    "text, verb, problem",
    [
        ("launch demo", None, "unknown command `launch`"),
        ("up", "up", "name the cluster"),
        ("up Demo", "up", "not a cluster name"),
        ("up demo size", "up", "not an option"),
        ("up demo colour=red", "up", "not an option"),
        ("up demo budget=lots", "up", "must be a number"),
        ("up demo size=a size=b", "up", "given twice"),
        ("up 'demo", "up", "unbalanced quotes"),
        ("run demo", "run", "give the command after"),
        ("run demo --", "run", "give the command after"),
        ("run demo extra -- ls", "run", "wrong number of arguments"),
        ("down demo -- rm -rf /", "down", "belongs to `run` only"),
        ("down", "down", "wrong number of arguments"),
        ("cancel demo 42", "cancel", "not a job id"),
        ("quote small", "quote", "wrong number of arguments"),
        ("quote small 0", "quote", "positive number"),
        ("x" * 5000, None, "longer than"),
    ],
)
def test_malformed_commands_get_a_usage_line(text: str, verb: str | None, problem: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(text)
    message = str(raised.value)
    assert problem in message and "\n" not in message and len(message) < 300
    assert (f"/lsst {USAGE[verb]}" in message) if verb else ("`help`" in message)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_gets_a_usage_line(text: str) -> None:
    try:
        command = parse(text)
    except UsageError as error:
        assert "Usage:" in str(error) or "Commands:" in str(error)
        assert len(str(error)) < 400
    else:
        assert command.verb in USAGE


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(USAGE)), st.lists(st.text(min_size=1, max_size=20), max_size=5))
def test_any_arguments_to_a_known_command_parse_or_get_its_usage(verb: str, words: list[str]) -> None:
    try:
        parse(" ".join([verb, *words]))
    except UsageError as error:
        assert error.verb in (verb, None)


def test_notifications_say_what_happened_and_what_to_do() -> None:
    ready = notification_text("Cluster State Changed", {"cluster": "demo", "owner": "alice", "state": "ready"})
    assert ready and "`demo` is ready" in ready and "/lsst run demo" in ready
    assert notification_text("Cluster State Changed", {"cluster": "demo", "state": "launching"}) is None
    done = notification_text(
        "Job State Changed", {"cluster": "demo", "job_id": "j-1", "state": "failed", "exit_code": "1:0"}
    )
    assert done == "✗ Job `j-1` on `demo` failed (exit 1:0)."
    assert notification_text("Job State Changed", {"cluster": "demo", "job_id": "j-1", "state": "running"}) is None
    warning = notification_text(
        "Spend Warning",
        {"cluster": "demo", "threshold_percent": 80, "spend_usd": 20.0, "budget_usd": 25, "burn_usd_per_hour": 1.5},
    )
    assert warning and "80%" in warning and "$20.00 of $25.00" in warning and "/lsst down demo" in warning
    gone = notification_text(
        "Teardown Completed",
        {
            "cluster": "demo",
            "reason": "idle",
            "outcome": "deleted",
            "final_spend_usd": 3.21,
            "budget_usd": 25,
            "archive_uri": "s3://archive/alice/demo/g1/",
        },
    )
    assert gone == (
        "🧹 `demo` was deleted (it was idle); final cost $3.21 of $25.00. Results: s3://archive/alice/demo/g1/"
    )
    kept = notification_text(
        "Teardown Completed",
        {"cluster": "demo", "reason": "budget", "outcome": "kept_data", "remaining_burn_usd_per_hour": 0.12},
    )
    assert kept and "data kept" in kept and "$0.12/h" in kept


def test_the_slack_app_manifest_declares_this_command() -> None:
    import re
    from pathlib import Path

    import yaml

    from lsstctl.domain.chatops import COMMAND

    manifest = yaml.safe_load((Path(__file__).resolve().parents[2] / "infra" / "slack-app-manifest.yaml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == COMMAND and command["url"] == "REPLACE_WITH_SlackCommandUrl"
    hinted = set(re.findall(r"(?:^|\| )([a-z]+)", command["usage_hint"]))
    assert hinted <= set(USAGE) and "commands" in manifest["oauth_config"]["scopes"]["bot"]
