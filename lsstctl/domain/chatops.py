"""ChatOps: the `/lsst` slash command's grammar and the messages people read. Pure: no AWS,
no Slack client (lsstctl.services.chatops runs commands, lsstctl.adapters.slack posts).

A command line is split like a shell would (quotes group words); `run` keeps everything after
` -- ` verbatim. Anything that does not parse is a `UsageError` whose text is one short usage
line for that subcommand (or the command list), never a trace.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from lsstctl.domain.models import CLUSTER_NAME_RE

COMMAND = "/lsst"
USAGE: dict[str, str] = {
    "help": "help",
    "up": "up <name> [size=<preset>] [budget=<usd>] [idle=<minutes>] [lifetime=<hours>] [stack=<eups tag>]",
    "status": "status [name]",
    "run": "run <name> -- <command>",
    "jobs": "jobs <name>",
    "cancel": "cancel <name> <job id>",
    "cost": "cost [name]",
    "quote": "quote <size> <hours>",
    "down": "down <name>",
}
# Commands answered at once (reads); the others start work and report to the response URL.
READS = frozenset({"help", "status", "jobs", "cost", "quote"})
UP_OPTIONS = {
    "size": "preset",
    "budget": "budget_usd",
    "idle": "idle_minutes",
    "lifetime": "max_lifetime_hours",
    "stack": "stack_tag",
}
_NAME = re.compile(CLUSTER_NAME_RE)
_JOB = re.compile(r"^j-[0-9a-z-]{1,64}$")
MAX_TEXT = 4000


class UsageError(ValueError):
    """A command that does not parse; str() is what the person sees."""

    def __init__(self, verb: str | None, problem: str):
        self.verb = verb
        if verb:
            super().__init__(f"{problem}. Usage: `{COMMAND} {USAGE[verb]}`")
        else:
            super().__init__(f"{problem}. Commands: " + ", ".join(f"`{v}`" for v in USAGE) + f" (`{COMMAND} help`)")


@dataclass(frozen=True)
class Command:
    verb: str
    name: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    job: str | None = None
    hours: float | None = None
    size: str | None = None

    def spec(self) -> dict[str, Any]:
        """An `up`'s ClusterSpec body (the HTTP API's, so the same validation applies)."""
        body: dict[str, Any] = {"name": self.name, "preset": self.options.get("size", "small")}
        for option, spec_field in UP_OPTIONS.items():
            if option != "size" and option in self.options:
                body[spec_field] = self.options[option]
        return body


def parse(text: str) -> Command:
    """The command a person typed after `/lsst` (Slack's `text` field)."""
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise UsageError(None, f"that command is longer than {MAX_TEXT} characters")
    head, sep, tail = text.partition(" -- ")
    if not sep and text.endswith(" --"):
        head, sep, tail = text[:-3], " -- ", ""
    try:
        words = shlex.split(head)
    except ValueError:
        raise UsageError(_verb_of(head), "unbalanced quotes") from None
    if not words:
        return Command("help")
    verb, args = words[0].lower(), words[1:]
    if verb not in USAGE:
        raise UsageError(None, f"unknown command `{_shown(words[0])}`")
    if sep and verb != "run":
        raise UsageError(verb, "` -- ` belongs to `run` only")
    return _PARSERS[verb](verb, args, tail.strip() if sep else None)


def _verb_of(head: str) -> str | None:
    first = head.split(maxsplit=1)[0].lower() if head.split() else ""
    return first if first in USAGE else None


def _shown(word: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "?", word)[:40]


def _name(verb: str, word: str) -> str:
    if not _NAME.match(word):
        raise UsageError(verb, f"`{_shown(word)}` is not a cluster name (lowercase letters, digits and -, 2-40)")
    return word


def _count(verb: str, args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise UsageError(verb, "wrong number of arguments")


def _help(verb: str, args: list[str], _: str | None) -> Command:
    return Command("help")


def _up(verb: str, args: list[str], _: str | None) -> Command:
    if not args:
        raise UsageError(verb, "name the cluster")
    name, options = _name(verb, args[0]), {}
    for word in args[1:]:
        key, eq, value = word.partition("=")
        if not eq or key.lower() not in UP_OPTIONS or not value:
            raise UsageError(verb, f"`{_shown(word)}` is not an option")
        if key.lower() in options:
            raise UsageError(verb, f"`{key.lower()}` given twice")
        options[key.lower()] = value
    for key in ("budget", "idle", "lifetime"):
        if key in options and not re.fullmatch(r"\d{1,7}(\.\d{1,4})?", options[key]):
            raise UsageError(verb, f"`{key}` must be a number")
    return Command(verb, name=name, options=options)


def _named(verb: str, args: list[str], _: str | None) -> Command:
    _count(verb, args, 1, 1)
    return Command(verb, name=_name(verb, args[0]))


def _maybe_named(verb: str, args: list[str], _: str | None) -> Command:
    _count(verb, args, 0, 1)
    return Command(verb, name=_name(verb, args[0]) if args else None)


def _run(verb: str, args: list[str], command: str | None) -> Command:
    _count(verb, args, 1, 1)
    if not command:
        raise UsageError(verb, "give the command after ` -- `")
    return Command(verb, name=_name(verb, args[0]), command=command)


def _cancel(verb: str, args: list[str], _: str | None) -> Command:
    _count(verb, args, 2, 2)
    if not _JOB.match(args[1]):
        raise UsageError(verb, f"`{_shown(args[1])}` is not a job id (j-...)")
    return Command(verb, name=_name(verb, args[0]), job=args[1])


def _quote(verb: str, args: list[str], _: str | None) -> Command:
    _count(verb, args, 2, 2)
    if not re.fullmatch(r"\d{1,5}(\.\d{1,2})?", args[1]) or float(args[1]) <= 0:
        raise UsageError(verb, "hours must be a positive number")
    return Command(verb, size=args[0].lower(), hours=float(args[1]))


_PARSERS = {
    "help": _help,
    "up": _up,
    "status": _maybe_named,
    "run": _run,
    "jobs": _named,
    "cancel": _cancel,
    "cost": _maybe_named,
    "quote": _quote,
    "down": _named,
}


def help_text() -> str:
    return "\n".join(
        [f"*{COMMAND}* runs LSST Science Pipelines clusters in this team's AWS account:"]
        + [f"• `{COMMAND} {line}`" for line in USAGE.values()]
        + ["Sizes: `/lsst quote <size> <hours>` lists them; spend stops at the budget."]
    )


def money(value: float | None) -> str:
    return "$?" if value is None else f"${value:,.2f}"


# --------------------------------------------------------------------------------------
# Who is who in Slack, and where an owner's notifications go
# --------------------------------------------------------------------------------------
from pydantic import BaseModel, Field  # noqa: E402  (kept beside the records they define)

from lsstctl.domain.models import USER_NAME_RE  # noqa: E402

SLACK_ID_RE = r"^[A-Z0-9]{2,32}$"


class ChatIdentitySpec(BaseModel):
    """What an admin sends to let a Slack user act as an owner (PUT /chatops/identities)."""

    model_config = {"extra": "forbid"}

    team_id: str = Field(pattern=SLACK_ID_RE, description="the Slack workspace (T...)")
    user_id: str = Field(pattern=SLACK_ID_RE, description="the Slack user (U... or W...)")
    owner: str = Field(pattern=USER_NAME_RE, description="the control-plane owner they act as")
    admin: bool = Field(False, description="may act on every owner's clusters")


class ChatIdentity(ChatIdentitySpec):
    registered_by: str
    registered_at: str

    @property
    def key(self) -> str:
        return f"{self.team_id}#{self.user_id}"


class ChannelSpec(BaseModel):
    """Where an owner's notifications go (PUT /chatops/channel): a Slack incoming webhook."""

    model_config = {"extra": "forbid"}

    # Checked against LSSTCTL_CHAT_URL_PREFIX by the service (Slack's hooks on AWS).
    webhook_url: str = Field(min_length=12, max_length=500, description="https://hooks.slack.com/services/...")
    owner: str | None = Field(None, pattern=USER_NAME_RE, description="defaults to the caller; admins may name another")


def masked(url: str) -> str:
    """A webhook URL is a credential: shown with its secret part hidden."""
    return url[: url.rfind("/") + 1] + "…" if "/" in url else "…"
