"""ChatOps end to end on the emulator, over HTTP: signed `/lsst up`, `run`, `status`, `down`
as Slack sends them, the chatops workflow doing the work, and everything the product posted
(answers at the command's response URL, notifications in the owner's channel) received by a
local server standing in for Slack, then read as a person would."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any
from urllib.parse import urlencode

import boto3
from slack_sdk.signature import SignatureVerifier

from lsstctl.emulator.demo import Api
from tests.slack_inbox import SlackInbox

TEAM, USER, OWNER = "T0E2E", "U0CAROL", "carol"


class Slack:
    """Slack's side of the slash command: form-encoded, signed with the app's secret."""

    def __init__(self, api_url: str, inbox: SlackInbox):
        secret_id = os.environ["LSSTCTL_SLACK_SIGNING_SECRET_ARN"]
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        self.signer = SignatureVerifier(json.loads(value)["signing_secret"])
        self.url = api_url + "/chatops/slack"
        self.inbox = inbox
        self.count = 0

    def command(self, text: str) -> tuple[int, Any, str]:
        """(status, immediate answer, this command's response URL path)."""
        self.count += 1
        path = f"/commands/{self.count}"
        body = urlencode(
            {
                "team_id": TEAM,
                "user_id": USER,
                "user_name": OWNER,
                "channel_id": "C0E2E",
                "command": "/lsst",
                "text": text,
                "response_url": self.inbox.url + path,
                "trigger_id": f"e2e.{self.count}.{time.time_ns()}",
            }
        ).encode()
        timestamp = str(int(time.time()))
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": self.signer.generate_signature(timestamp=timestamp, body=body.decode()),
            },
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, answer = error.code, json.loads(error.read() or b"{}")
        assert time.monotonic() - started < 3, "Slack waits 3 seconds at most"
        return status, answer, path


def test_a_cluster_from_slack_up_run_status_down(emulator: Any) -> None:
    inbox = SlackInbox()
    try:
        admin = Api(emulator.api_url, who="admin")
        owner = Api(emulator.api_url, who=OWNER)
        admin.expect(200, "PUT", "/chatops/identities", {"team_id": TEAM, "user_id": USER, "owner": OWNER})
        owner.expect(200, "PUT", "/chatops/channel", {"webhook_url": inbox.url + "/channel/carol"})
        slack = Slack(emulator.api_url, inbox)

        status, answer, path = slack.command("up e2e-chat size=small budget=25 idle=30")
        assert status == 200 and answer["text"].startswith("On it: `/lsst up e2e-chat")
        launched = inbox.wait_for(path, "Launching")
        assert launched.startswith("🚀 Launching `e2e-chat` (small, budget $25.00, idle stop after 30 min")
        ready = inbox.wait_for("/channel/carol", "is ready")
        assert ready.startswith("✅ `e2e-chat` is ready.") and "/lsst run e2e-chat -- <command>" in ready

        status, answer, path = slack.command("run e2e-chat -- echo hello from slack")
        assert status == 200
        submitted = inbox.wait_for(path, "submitted")
        job_id = submitted.split("`")[1]
        finished = inbox.wait_for("/channel/carol", f"Job `{job_id}`")
        assert finished.startswith(f"✅ Job `{job_id}` on `e2e-chat` completed")

        # A long job, cancelled from Slack: scancel on the head node, the job's workflow records it.
        status, answer, path = slack.command("run e2e-chat -- sleep 600")
        long_job = inbox.wait_for(path, "submitted").split("`")[1]
        status, answer, path = slack.command(f"cancel e2e-chat {long_job}")
        assert inbox.wait_for(path, f"Job `{long_job}`").startswith(f"■ Job `{long_job}` on `e2e-chat`: ")
        assert inbox.wait_for("/channel/carol", f"Job `{long_job}` on `e2e-chat` cancelled")

        status, answer, _ = slack.command("status e2e-chat")
        assert status == 200 and answer["text"].startswith("`e2e-chat`: *ready* · spend $")
        status, answer, _ = slack.command("jobs e2e-chat")
        assert f"`{job_id}` job: *completed*" in answer["text"]
        status, answer, _ = slack.command("up")  # a person's typo: a usage line, nothing else
        assert status == 200 and answer["text"].startswith("name the cluster. Usage: `/lsst up <name>")

        status, answer, path = slack.command("down e2e-chat")
        assert inbox.wait_for(path, "Tearing down").startswith("⏹ Tearing down `e2e-chat`")
        gone = inbox.wait_for("/channel/carol", "was deleted")
        assert gone.startswith("🧹 `e2e-chat` was deleted (you asked); final cost $") and "of $25.00." in gone
        assert "Results: s3://lsstctl-archive/carol/e2e-chat/" in gone

        # What the person saw in the channel, in order.
        channel = inbox.texts("/channel/carol")
        kinds = [t.split()[0] for t in channel]
        assert kinds.index("✅") < kinds.index("🧹") and channel[-1] == gone
    finally:
        inbox.close()
