"""ChatOps: the `/lsst` slash command and the notifications that follow a cluster's life.

The endpoint (`slash_command`) answers within Slack's 3 seconds: it checks the signature,
finds who the Slack user is, parses the command, answers reads at once and starts the chatops
workflow for anything that changes something; the workflow's step (`run_command`) does it
through the same services the HTTP API uses and posts the result to the command's response
URL. Slack retries a command it got no answer to: the workflow's execution is named after the
command's trigger, so a repeat starts nothing. Notifications (`notify`) are driven by the
lifecycle events on the bus, not by polling, and go to the owner's channel webhook.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qs

from lsstctl.domain.chatops import (
    READS,
    USAGE,
    ChannelSpec,
    ChatIdentity,
    ChatIdentitySpec,
    Command,
    UsageError,
    help_text,
    masked,
    money,
    parse,
)
from lsstctl.domain.models import ClusterSpec, ClusterState, JobSpec, iso
from lsstctl.errors import ControlPlaneError, NotFoundError, TransientError, UnauthenticatedError, ValidationError
from lsstctl.observability import logger
from lsstctl.services import audit as audit_trail
from lsstctl.services import clusters, costs, jobs, ratelimit
from lsstctl.services.deps import Deps
from lsstctl.services.idempotency import once
from lsstctl.services.identity import Principal, ensure_admin, ensure_may_act_for

FIELDS = ("team_id", "user_id", "user_name", "channel_id", "text", "response_url", "trigger_id", "command")


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def in_channel(text: str) -> dict[str, Any]:
    return {"response_type": "in_channel", "text": text}


# --------------------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------------------
def slash_command(deps: Deps, raw_body: str, headers: dict[str, str]) -> dict[str, Any]:
    """POST /chatops/slack: verify, identify, parse; reads answered, writes started."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if not deps.chat.verify(raw_body, lowered.get("x-slack-request-timestamp"), lowered.get("x-slack-signature")):
        raise UnauthenticatedError("missing, stale or invalid Slack signature")
    form = {key: values[0] for key, values in parse_qs(raw_body, keep_blank_values=True).items() if key in FIELDS}
    request = {key: form.get(key, "") for key in FIELDS}
    try:
        return _answer(deps, request, raw_body)
    except TransientError as error:
        logger.warning("slash command: AWS busy", extra={"error": error.code})
        return ephemeral("Sorry, AWS is busy right now and nothing was done. Try again in a minute.")
    except ControlPlaneError as error:
        return ephemeral(f"Sorry: {error.message}")


def _answer(deps: Deps, request: dict[str, str], raw_body: str) -> dict[str, Any]:
    text = request["text"].strip()
    identity = deps.store.get_chat_identity(request["team_id"], request["user_id"])
    if identity is None:
        audit(deps, request, owner=None, outcome="refused: unmapped Slack user")
        return ephemeral(
            f"Sorry, your Slack user ({request['user_id']}) is not linked to a control-plane owner yet. "
            "Ask an admin to link it (PUT /chatops/identities)."
        )
    principal = principal_of(identity)
    try:
        command = parse(text)
    except UsageError as error:
        audit(deps, request, owner=identity.owner, outcome="usage")
        return ephemeral(str(error))
    if command.verb in READS:
        try:
            answer = execute(deps, principal, command)
            outcome = "ok"
        except ControlPlaneError as error:
            answer, outcome = failure_text(command, error), f"error: {error.code}"
        audit(deps, request, owner=identity.owner, outcome=outcome)
        return ephemeral(answer)
    if not request["response_url"].startswith(deps.settings.chat_url_prefix):
        raise ValidationError("response_url is not Slack's", field="response_url")
    ratelimit.admit(deps, principal)
    deps.workflows.start(
        deps.settings.chatops_state_machine_arn,
        execution_name(request, raw_body),
        {"request": request, "owner": identity.owner, "admin": identity.admin},
    )
    audit(deps, request, owner=identity.owner, outcome="accepted")
    return ephemeral(f"On it: `/lsst {text}` (I'll answer here).")


def execution_name(request: dict[str, str], raw_body: str) -> str:
    """The same command delivered twice gets the same name (Slack's trigger id; else the body)."""
    trigger = re.sub(r"[^A-Za-z0-9_-]", "", request.get("trigger_id", ""))[:60]
    return f"slack-{trigger}" if trigger else f"slack-{hashlib.sha256(raw_body.encode()).hexdigest()[:40]}"


def principal_of(identity: ChatIdentity) -> Principal:
    return Principal(name=identity.owner, is_admin=identity.admin, arn=f"slack:{identity.team_id}:{identity.user_id}")


def audit(deps: Deps, request: dict[str, str], *, owner: str | None, outcome: str) -> None:
    """Who (Slack ids and the owner they act as), what, when, and how it ended."""
    audit_trail.record(
        deps,
        f"slack:/lsst {request.get('text', '').split(' ', 1)[0]}".rstrip(),
        outcome,
        who=f"slack:{request.get('team_id', '')}:{request.get('user_id', '')}",
        owner=owner,
        command=request.get("text", "")[:500],
    )


# --------------------------------------------------------------------------------------
# The workflow's step
# --------------------------------------------------------------------------------------
def run_command(deps: Deps, request: dict[str, str], owner: str, admin: bool, execution: str | None) -> dict[str, Any]:
    """Do a write command and tell the person. Transient failures raise (the workflow
    retries); a refusal (not found, not theirs, over quota...) is the answer."""
    principal = Principal(name=owner, is_admin=admin, arn=f"slack:{request['team_id']}:{request['user_id']}")
    command = parse(request["text"])

    def operation() -> dict[str, Any]:
        try:
            return {"answer": execute(deps, principal, command, request_key=execution), "outcome": "ok"}
        except TransientError:
            raise  # nothing recorded: the workflow's retry runs it again
        except ControlPlaneError as error:
            return {"answer": failure_text(command, error), "outcome": f"error: {error.code}"}

    # A retried step (the answer could not be posted, say) does the command once: the
    # first attempt's answer is replayed (Powertools idempotency, keyed by the execution).
    done = once(deps.idempotency, key=execution, scope=f"{owner}#slack", body=request["text"], operation=operation)
    deps.chat.post(request["response_url"], in_channel(done["answer"]))
    audit(deps, request, owner=principal.name, outcome=done["outcome"])
    return {"outcome": done["outcome"]}


def command_failed(deps: Deps, request: dict[str, str], owner: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """The workflow's Catch: retries ran out. Say so; never leave the person waiting."""
    logger.warning("chat command failed", extra={"error": (error or {}).get("Error")})
    deps.chat.post(
        request["response_url"],
        ephemeral(
            f"Sorry, `/lsst {request['text']}` could not be completed (AWS kept failing). Nothing was changed twice; "
            "try again in a few minutes."
        ),
    )
    audit(deps, request, owner=owner, outcome="failed: retries exhausted")
    return {"outcome": "failed"}


def failure_text(command: Command, error: ControlPlaneError) -> str:
    where = f" ({error.field})" if error.field else ""
    return f"✗ `/lsst {command.verb}{' ' + command.name if command.name else ''}`: {error.message}{where}"


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------
def execute(deps: Deps, principal: Principal, command: Command, request_key: str | None = None) -> str:
    verb = command.verb
    if verb == "help":
        return help_text()
    if verb == "status":
        return status(deps, principal, command.name)
    if verb == "jobs":
        assert command.name
        listed = jobs.list_jobs(deps, principal, command.name)
        if not listed:
            return f"`{command.name}` has no jobs yet: `/lsst {USAGE['run']}`"
        return "\n".join(
            [f"Jobs on `{command.name}`:"]
            + [
                f"• `{j.job_id}` {j.spec.name}: *{j.state.value}*" + (f" (exit {j.exit_code})" if j.exit_code else "")
                for j in sorted(listed, key=lambda j: j.created_at)[-20:]
            ]
        )
    if verb == "cost":
        return cost(deps, principal, command.name)
    if verb == "quote":
        return quote(deps, principal, command)
    if verb == "up":
        body = command.spec()
        if "budget_usd" not in body:
            body["budget_usd"] = default_budget(deps, principal, str(body["preset"]))
        try:
            spec = ClusterSpec.model_validate(body)
        except ValueError as error:
            problems: list[Any] = getattr(error, "errors", lambda: [])()
            first = problems[0] if problems else {"loc": ("spec",), "msg": str(error)}
            raise ValidationError(str(first["msg"]), field=".".join(str(p) for p in first["loc"])) from None
        cluster = clusters.launch_cluster(deps, principal, spec)
        capped = (cluster.governor or {}).get("message") if (cluster.governor or {}).get("capped") else None
        return (
            f"🚀 Launching `{cluster.name}` ({command.options.get('size', 'small')}, budget "
            f"{money(cluster.spec.budget_usd)}, idle stop after {cluster.spec.idle_minutes} min, ends after "
            f"{cluster.spec.max_lifetime_hours:g} h at the latest"
            + (f"; {capped}: raise the budget for more" if capped else "")
            + f"). I'll post to your channel when it is ready; `/lsst status {cluster.name}` meanwhile."
        )
    if verb == "run":
        assert command.name and command.command
        job = jobs.submit_job(deps, principal, command.name, JobSpec(command=command.command), request_key=request_key)
        return f"▶ Job `{job.job_id}` submitted to `{command.name}`. `/lsst jobs {command.name}` to follow it."
    if verb == "cancel":
        assert command.name and command.job
        job = jobs.cancel_job(deps, principal, command.name, command.job)
        return f"■ Job `{job.job_id}` on `{command.name}`: {job.state.value}."
    if verb == "down":
        assert command.name
        cluster = clusters.delete_cluster(deps, principal, command.name)
        return (
            f"⏹ Tearing down `{cluster.name}`: compute stops, outputs are archived, then it is deleted. "
            "I'll post the final cost to your channel."
        )
    raise ValidationError(f"unknown command {verb}", field="text")


DEFAULT_BUDGET_HOURS = 4


def preset_prices(deps: Deps, principal: Principal, size: str) -> dict[str, Any]:
    """A named size with its hourly prices (GET /presets), or a ValidationError naming them."""
    presets = {p["name"]: p for p in costs.list_presets(deps, principal)["presets"]}
    if size not in presets:
        raise ValidationError(f"no size '{size}'; sizes: {', '.join(sorted(presets))}", field="size")
    return dict(presets[size])


def default_budget(deps: Deps, principal: Principal, size: str) -> float:
    """An `up` without `budget=`: four hours at full size (at least $10), rounded up to $5."""
    hourly = float(preset_prices(deps, principal, size)["full_size_usd_per_hour"])
    return float(max(10, 5 * -(-hourly * DEFAULT_BUDGET_HOURS // 5)))


def status(deps: Deps, principal: Principal, name: str | None) -> str:
    if name:
        view = costs.cluster_view(deps, principal, name)
        spend = view["cost"]
        governor = view.get("governor") or {}
        capped = ""
        if governor.get("capped"):
            runway = governor.get("runway_hours")
            capped = f" · {governor['message']}" + (f", {runway:.1f} h of runway" if runway is not None else "")
        return (
            f"`{view['name']}`: *{view['state']}* · spend {money(spend['spend_usd'])} of "
            f"{money(spend['budget_usd'])}"
            + capped
            + (f" · head node {view['head_node_instance_id']}" if view.get("head_node_instance_id") else "")
        )
    listed = [c for c in clusters.list_clusters(deps, principal) if c.state != ClusterState.DELETED]
    if not listed:
        return f"No live clusters. `/lsst {USAGE['up']}`"
    return "\n".join(
        ["Your clusters:"]
        + [
            f"• `{c.name}`{'' if c.owner == principal.name else ' (' + c.owner + ')'}: "
            f"*{c.state.value}*, budget {money(c.spec.budget_usd)}"
            for c in listed
        ]
    )


def cost(deps: Deps, principal: Principal, name: str | None) -> str:
    if name:
        ledger = costs.cluster_cost(deps, principal, name)
        return (
            f"`{name}` has spent {money(ledger.get('spend_usd'))} of {money(ledger.get('budget_usd'))}"
            + (f", burning {money(ledger.get('burn_usd_per_hour'))}/h" if ledger.get("burn_usd_per_hour") else "")
            + (f" (measured {ledger['measured_at']})" if ledger.get("measured_at") else " (not measured yet)")
        )
    summary = costs.costs_by_owner(deps, principal)
    lines = [f"• {o['owner']}: {money(o['spend_usd'])} over {o['clusters']} clusters" for o in summary["owners"]]
    return "\n".join([f"Spend so far: {money(summary['total_spend_usd'])}"] + lines)


def quote(deps: Deps, principal: Principal, command: Command) -> str:
    chosen = preset_prices(deps, principal, command.size or "")
    hours = command.hours or 0
    return (
        f"`{chosen['name']}` for {hours:g} h: {money(chosen['at_rest_usd_per_hour'] * hours)} idle, up to "
        f"{money(chosen['full_size_usd_per_hour'] * hours)} at full size ({chosen['description']}; "
        f"{deps.settings.region} list prices of {chosen['prices_as_of']}). Set `budget=` at least that."
    )


# --------------------------------------------------------------------------------------
# Who is who, and where notifications go (HTTP API)
# --------------------------------------------------------------------------------------
def link_identity(deps: Deps, principal: Principal, spec: ChatIdentitySpec) -> ChatIdentity:
    ensure_admin(principal)
    identity = ChatIdentity(
        **spec.model_dump(), registered_by=principal.arn or principal.name, registered_at=iso(deps.clock())
    )
    deps.store.put_chat_identity(identity)
    return identity


def list_identities(deps: Deps, principal: Principal) -> list[ChatIdentity]:
    return deps.store.list_chat_identities(None if principal.is_admin else principal.name)


def unlink_identity(deps: Deps, principal: Principal, team_id: str, user_id: str) -> None:
    ensure_admin(principal)
    if not deps.store.delete_chat_identity(team_id, user_id):
        raise NotFoundError(f"Slack user {user_id} of {team_id} is not linked")


def set_channel(deps: Deps, principal: Principal, spec: ChannelSpec) -> dict[str, str]:
    owner = spec.owner or principal.name
    ensure_may_act_for(principal, owner)
    if not spec.webhook_url.startswith(deps.settings.chat_url_prefix):
        raise ValidationError(f"webhook_url must start with {deps.settings.chat_url_prefix}", field="webhook_url")
    deps.store.put_chat_channel(owner, spec.webhook_url, principal.arn or principal.name, iso(deps.clock()))
    return {"owner": owner, "webhook_url": masked(spec.webhook_url)}


# --------------------------------------------------------------------------------------
# Notifications
# --------------------------------------------------------------------------------------
def notify(deps: Deps, event: dict[str, Any]) -> dict[str, Any]:
    """A lifecycle event from the bus, as a message in its owner's channel (if they set one)."""
    detail = event.get("detail") or {}
    text = notification_text(event.get("detail-type", ""), detail)
    owner = detail.get("owner")
    if not text or not owner:
        return {"sent": False, "why": "not a notified event"}
    url = deps.store.get_chat_channel(owner)
    if not url:
        return {"sent": False, "why": f"{owner} has no channel"}
    # EventBridge delivers at least once: the same event (same id) is posted once. A post
    # that fails gives the claim back, so the retry posts it.
    event_id = str(event.get("id") or "")
    if event_id and not deps.store.claim_once(f"NOTIFY#{event_id}", ttl_seconds=86400):
        return {"sent": False, "why": "already sent"}
    try:
        deps.chat.post(url, {"text": text})
    except Exception:
        if event_id:
            deps.store.release_once(f"NOTIFY#{event_id}")
        raise
    logger.info("notified", extra={"owner": owner, "event": event.get("detail-type")})
    return {"sent": True}


def notification_text(kind: str, d: dict[str, Any]) -> str | None:
    name = f"`{d.get('cluster') or '?'}`"
    if kind == "Cluster State Changed":
        state = d.get("state")
        if state == "ready":
            return (
                f"✅ {name} is ready. Run work with `/lsst run {d.get('cluster')} -- <command>`; "
                "it deletes itself when idle, and before its budget is spent."
            )
        if state == "failed":
            return f"⚠ {name} could not be torn down completely: {d.get('reason', 'see /lsst status')}. It retries; check `/lsst status`."
        return None
    if kind == "Job State Changed":
        state = d.get("state")
        if state in ("completed", "failed", "cancelled"):
            icon = {"completed": "✅", "failed": "✗", "cancelled": "■"}[state]
            where = f" Outputs: {d['output_dir']}." if d.get("output_dir") else ""
            return (
                f"{icon} Job `{d.get('job_id')}` on {name} {state}"
                + (f" (exit {d['exit_code']})." if d.get("exit_code") else ".")
                + where
            )
        return None
    if kind == "Spend Warning":
        return (
            f"💸 {name} has spent {d.get('threshold_percent')}% of its budget: {money(d.get('spend_usd'))} of "
            f"{money(d.get('budget_usd'))}, burning {money(d.get('burn_usd_per_hour'))}/h. It is deleted before "
            f"the budget is reached; `/lsst down {d.get('cluster')}` to stop now."
        )
    if kind == "Teardown Completed":
        reason = str(d.get("reason") or "?")
        archived = f" Results: {d['archive_uri']}" if d.get("archive_uri") else ""
        if d.get("outcome", "deleted") != "deleted":
            return (
                f"⚠ {name}: teardown stopped ({REASONS.get(reason, reason)}) with its data kept; it still costs "
                f"{money(d.get('remaining_burn_usd_per_hour'))}/h. `/lsst down {d.get('cluster')}` retries it."
            )
        return (
            f"🧹 {name} was deleted ({REASONS.get(reason, reason)}); final cost {money(d.get('final_spend_usd'))}"
            f" of {money(d.get('budget_usd'))}." + archived
        )
    return None


REASONS = {
    "user": "you asked",
    "idle": "it was idle",
    "lifetime": "it reached its lifetime limit",
    "budget": "its budget would have been exceeded",
    "aws_budget": "the account's AWS budget was reached",
    "launch_failed": "its launch failed",
    "launch_stalled": "its launch stalled",
    "destroy": "the control plane is being removed",
}
