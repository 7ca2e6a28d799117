"""Callers as AWS names them: the full principal ARN, parsed, and what the control plane
has registered about it. Pure: no AWS calls.

What API Gateway passes for a SigV4-signed request (`requestContext.identity.userArn`):
- an IAM user: `arn:aws:iam::<account>:user[/path]/<name>`;
- an assumed role: `arn:aws:sts::<account>:assumed-role/<role>/<session>` — the role's path
  is not in it, and the session name is chosen by whoever called `sts:AssumeRole`, so it
  names a person only where an admin vouches for the federation (IAM Identity Center's
  roles set it to the signed-in user);
- the account's root: `arn:aws:iam::<account>:root` (never admitted).

A principal's key is what identifies it whatever the form of the ARN: IAM user and role
names are unique in an account whatever their path, so the key is the ARN without path
(`arn:aws:iam::<account>:user/<name>`, `arn:aws:iam::<account>:role/<name>`); every
session of a role has the role's key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from lsstctl.domain.models import USER_NAME_RE

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>iam|sts)::(?P<account>\d{12}):"
    r"(?P<kind>user|role|assumed-role|root)(?P<rest>(?:/[\x21-\x7e]+)?)$"
)
_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
_SESSION = re.compile(r"^[\w+=,.@-]{2,64}$")
# An owner's name is a user's name (it becomes part of IAM user, secret and tag names).
OWNER_NAME = re.compile(USER_NAME_RE)


@dataclass(frozen=True)
class CallerArn:
    partition: str
    account: str
    kind: Literal["user", "role", "assumed-role", "root"]
    name: str  # the user's or the role's name ("" for root)
    session: str | None = None  # assumed roles only

    @property
    def key(self) -> str:
        """The principal whatever the form of its ARN (no path; a role for its sessions)."""
        if self.kind == "root":
            return f"arn:{self.partition}:iam::{self.account}:root"
        kind = "user" if self.kind == "user" else "role"
        return f"arn:{self.partition}:iam::{self.account}:{kind}/{self.name}"

    @property
    def session_key(self) -> str | None:
        """One session of a role (an admin may be named down to it)."""
        return f"{self.key}#{self.session}" if self.session else None


def parse_arn(text: str) -> CallerArn:
    """Parse an IAM user, role, assumed-role or root ARN; ValueError for anything else."""
    match = _ARN.match(text or "")
    if not match:
        raise ValueError(f"not an IAM or STS principal ARN: {text!r}")
    service, kind, rest = match["service"], match["kind"], match["rest"]
    parts = rest.split("/")[1:] if rest else []
    if kind == "root":
        if parts or service != "iam":
            raise ValueError(f"not a root ARN: {text!r}")
        return CallerArn(match["partition"], match["account"], "root", "")
    if kind == "assumed-role":
        if service != "sts" or len(parts) != 2 or not _NAME.match(parts[0]) or not _SESSION.match(parts[1]):
            raise ValueError(f"an assumed-role ARN is arn:aws:sts::<account>:assumed-role/<role>/<session>: {text!r}")
        return CallerArn(match["partition"], match["account"], "assumed-role", parts[0], parts[1])
    if service != "iam" or not parts or not _NAME.match(parts[-1]):
        raise ValueError(f"not an IAM {kind} ARN: {text!r}")
    return CallerArn(match["partition"], match["account"], kind, parts[-1])  # type: ignore[arg-type]


def parse_admins(value: str) -> frozenset[str]:
    """Admins are full ARNs, comma separated: an IAM user, a role (every session of it), or
    one session of a role (`arn:aws:sts::<account>:assumed-role/<role>/<session>`). A bare
    name is refused: anyone who may choose a session name could match it."""
    keys = set()
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        caller = parse_arn(entry)
        if caller.kind == "root":
            raise ValueError("the account root is not an admin of the control plane; name an IAM user or role")
        keys.add(caller.session_key or caller.key)
    return frozenset(keys)


def is_admin(caller: CallerArn, admins: frozenset[str]) -> bool:
    return caller.key in admins or (caller.session_key is not None and caller.session_key in admins)


class Registration(BaseModel):
    """A principal the control plane admits: an IAM user create-user made (acting as its
    owner), or a role an admin registered — acting as one owner, or, when
    `trust_session_name`, as the person its session name names."""

    key: str
    arn: str
    kind: Literal["user", "role"]
    owner: str | None = None
    trust_session_name: bool = False
    registered_by: str
    registered_at: str

    @model_validator(mode="after")
    def _consistent(self) -> Registration:
        if self.trust_session_name and self.kind != "role":
            raise ValueError("only a role's session name can be trusted")
        if not self.trust_session_name and not self.owner:
            raise ValueError("owner is required unless the role's session name is trusted")
        if self.trust_session_name and self.owner:
            raise ValueError("a role whose session names the person has no fixed owner")
        return self


class RegistrationSpec(BaseModel):
    """What an admin sends to register a role (POST /principals)."""

    model_config = {"extra": "forbid"}

    arn: str = Field(description="the role's ARN, arn:aws:iam::<account>:role[/path]/<name>")
    owner: str | None = Field(None, description="the owner every session of the role acts as")
    trust_session_name: bool = Field(
        False, description="the session name is the person (only for federation an admin vouches for)"
    )

    @field_validator("arn")
    @classmethod
    def _role(cls, value: str) -> str:
        caller = parse_arn(value)
        if caller.kind != "role":
            raise ValueError("register a role ARN (IAM users are registered by create-user)")
        return value

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value is not None and not OWNER_NAME.match(value):
            raise ValueError(f"owner must match {USER_NAME_RE}")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> RegistrationSpec:
        if self.trust_session_name == bool(self.owner):
            raise ValueError("give either owner or trust_session_name: true")
        return self
