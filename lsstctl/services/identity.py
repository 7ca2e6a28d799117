"""Who is calling, and what they may see: owners act on their own things, admins on all."""
from __future__ import annotations

import re
from dataclasses import dataclass

from lsstctl.errors import ForbiddenError, NotFoundError, UnauthenticatedError

_ARN_NAME = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::\d{12}:(?:user|assumed-role)/(?:.*/)?([^/]+)$")


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool = False

    def may_act_for(self, owner: str) -> bool:
        return self.is_admin or self.name == owner


def principal_from(identity: str | None, *, admins: frozenset[str], user_prefix: str = "") -> Principal:
    """Map an IAM principal ARN (or a bare name, in local mode) to a Principal.

    Users created by this control plane are IAM users named `<prefix><name>`; the prefix is
    dropped so that the owner name is the one the user chose. For assumed roles the session
    name identifies the person.
    """
    if not identity:
        raise UnauthenticatedError("no caller identity on the request")
    match = _ARN_NAME.match(identity)
    name = match.group(1) if match else identity
    is_admin = name in admins or identity in admins
    if user_prefix and name.startswith(user_prefix):
        name = name[len(user_prefix):]
    if not re.match(r"^[A-Za-z0-9+=,.@_-]{1,64}$", name):
        raise UnauthenticatedError(f"unrecognised caller identity {identity!r}")
    return Principal(name=name.lower(), is_admin=is_admin)


def ensure_visible(principal: Principal, owner: str, what: str) -> None:
    """Others' resources are reported as missing, so their names do not leak."""
    if not principal.may_act_for(owner):
        raise NotFoundError(f"{what} not found")


def ensure_may_act_for(principal: Principal, owner: str, field: str = "owner") -> None:
    if not principal.may_act_for(owner):
        raise ForbiddenError(f"{principal.name} may not act for {owner}", field=field)
