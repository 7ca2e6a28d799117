"""Who is calling, and what they may see: owners act on their own things, admins on all.

A caller is its full principal ARN (see lsstctl.domain.principals), resolved through the
registry in the state table:
- from another account, or the account's root: 403;
- an admin (a full ARN in LSSTCTL_ADMIN_PRINCIPALS: a user, a role, or one session of a
  role): admitted, acting as its registered owner or, unregistered, as its own name;
- an IAM user create-user made: its owner;
- a session of a role an admin registered: the role's owner or, where the admin trusts the
  role's session names (IAM Identity Center), the person the session name names;
- anyone else: 403, and nothing is created for them.
Locally (LSSTCTL_TRUST_PRINCIPAL_HEADER) the identity header may carry an ARN, or a bare
name standing for a session of the local people role, which the emulator registers with
trusted session names: the same table, the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsstctl.domain.models import iso
from lsstctl.domain.principals import (
    OWNER_NAME,
    CallerArn,
    Registration,
    RegistrationSpec,
    is_admin,
    parse_admins,
    parse_arn,
)
from lsstctl.errors import ForbiddenError, NotFoundError, UnauthenticatedError, ValidationError
from lsstctl.services.deps import Deps


@dataclass(frozen=True)
class Principal:
    name: str  # the owner it acts as
    is_admin: bool = False
    arn: str = ""  # the caller's full ARN ("" for the control plane's own actions)

    def may_act_for(self, owner: str) -> bool:
        return self.is_admin or self.name == owner


def local_caller(deps: Deps, header: str) -> str:
    """The ARN a local identity header stands for (a bare name: a session of the local
    people role)."""
    if header.startswith("arn:"):
        return header
    s = deps.settings
    return f"arn:aws:sts::{s.account_id}:assumed-role/{s.local_people_role}/{header}"


def resolve(deps: Deps, identity: str | None) -> Principal:
    if not identity:
        raise UnauthenticatedError("no caller identity on the request")
    try:
        caller = parse_arn(identity)
    except ValueError as error:
        raise UnauthenticatedError(f"unrecognised caller identity {identity!r}") from error
    s = deps.settings
    if not s.account_id:
        raise ForbiddenError("the control plane does not know its account (LSSTCTL_ACCOUNT_ID); nobody is admitted")
    if caller.account != s.account_id:
        raise ForbiddenError(
            f"callers from account {caller.account} are not admitted (this control plane serves account {s.account_id})"
        )
    if caller.kind == "root":
        raise ForbiddenError("the account root may not use the control plane; sign in as an IAM user or role")
    admin = is_admin(caller, parse_admins(s.admin_principals))
    registration = deps.store.get_registration(caller.key)
    if registration is None:
        if not admin:
            raise ForbiddenError(
                f"{identity} is not registered with the control plane: IAM users are made by create-user, "
                "roles are registered by an admin (POST /principals)"
            )
        return Principal(name=_owner_name(caller.session or caller.name, identity), is_admin=True, arn=identity)
    if registration.trust_session_name:
        if caller.session is None:
            raise ForbiddenError(f"{identity} is a role; call as one of its sessions")
        owner = _owner_name(caller.session, identity)
    else:
        assert registration.owner
        owner = registration.owner
    return Principal(name=owner, is_admin=admin, arn=identity)


def _owner_name(name: str, identity: str) -> str:
    owner = name.lower()
    if not OWNER_NAME.match(owner):
        raise ForbiddenError(f"{identity}: '{name}' is not a valid owner name ({OWNER_NAME.pattern})")
    return owner


# the registry (admins register roles; create-user registers its IAM users) ---------------
def register_user(deps: Deps, owner: str, user_arn: str, by: str) -> Registration:
    caller = parse_arn(user_arn)
    existing = deps.store.get_registration(caller.key)
    registration = Registration(
        key=caller.key,
        arn=user_arn,
        kind="user",
        owner=owner,
        registered_by=existing.registered_by if existing else by,
        registered_at=existing.registered_at if existing else iso(deps.clock()),
    )
    if existing != registration:
        deps.store.put_registration(registration)
    return registration


def register_role(deps: Deps, principal: Principal, spec: RegistrationSpec) -> tuple[Registration, bool]:
    """(the registration, whether it is new). Admins only; a role of another account is
    refused (its callers would be refused anyway)."""
    ensure_admin(principal)
    caller = parse_arn(spec.arn)
    if caller.account != deps.settings.account_id:
        raise ValidationError(
            f"the role is in account {caller.account}; this control plane serves account {deps.settings.account_id}",
            field="arn",
        )
    existing = deps.store.get_registration(caller.key)
    registration = Registration(
        key=caller.key,
        arn=spec.arn,
        kind="role",
        owner=spec.owner,
        trust_session_name=spec.trust_session_name,
        registered_by=principal.arn,
        registered_at=iso(deps.clock()),
    )
    if existing is not None and existing.model_dump(
        exclude={"registered_by", "registered_at"}
    ) == registration.model_dump(exclude={"registered_by", "registered_at"}):
        return existing, False
    deps.store.put_registration(registration)
    return registration, existing is None


def list_registrations(deps: Deps, principal: Principal) -> list[Registration]:
    ensure_admin(principal)
    return deps.store.list_registrations()


def remove_registration(deps: Deps, principal: Principal, arn: str) -> Registration:
    ensure_admin(principal)
    try:
        key = parse_arn(arn).key
    except ValueError as error:
        raise ValidationError(str(error), field="arn") from error
    existing = deps.store.get_registration(key)
    if existing is None:
        raise NotFoundError(f"no registration for {arn}")
    deps.store.delete_registration(key)
    return existing


def ensure_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ForbiddenError("only an admin may manage the control plane's principals")


def ensure_visible(principal: Principal, owner: str, what: str) -> None:
    """Others' resources are reported as missing, so their names do not leak."""
    if not principal.may_act_for(owner):
        raise NotFoundError(f"{what} not found")


def ensure_may_act_for(principal: Principal, owner: str, field: str = "owner") -> None:
    if not principal.may_act_for(owner):
        raise ForbiddenError(f"{principal.name} may not act for {owner}", field=field)


__all__ = [
    "CallerArn",
    "Principal",
    "resolve",
    "local_caller",
    "register_user",
    "register_role",
    "list_registrations",
    "remove_registration",
    "ensure_admin",
    "ensure_visible",
    "ensure_may_act_for",
]
