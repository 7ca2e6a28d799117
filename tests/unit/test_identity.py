"""Caller identity: a caller is its full principal ARN, resolved through the registry.

The ARNs are those API Gateway passes for SigV4-signed requests (requestContext.identity.
userArn). The registry here is a dict behind the store's four registry methods."""

from __future__ import annotations

from datetime import UTC
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError as ModelError

from lsstctl.domain.principals import Registration, RegistrationSpec, parse_admins, parse_arn
from lsstctl.errors import ForbiddenError, NotFoundError, UnauthenticatedError, ValidationError
from lsstctl.services import identity
from lsstctl.services.identity import Principal, ensure_visible, local_caller, resolve
from lsstctl.settings import Settings

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
ADMIN_USER = f"arn:aws:iam::{ACCOUNT}:user/ops/ops-admin"
ADMIN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/PlatformAdmins"
SSO_ROLE = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Astronomers_0a1b2c"
PIPELINE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/service/NightlyPipeline"


class Registry:
    def __init__(self) -> None:
        self.items: dict[str, Registration] = {}

    def get_registration(self, key: str) -> Registration | None:
        return self.items.get(key)

    def put_registration(self, registration: Registration) -> None:
        self.items[registration.key] = registration

    def list_registrations(self) -> list[Registration]:
        return list(self.items.values())

    def delete_registration(self, key: str) -> None:
        self.items.pop(key, None)


def deps(admins: str = f"{ADMIN_USER},{ADMIN_ROLE}") -> Any:
    from datetime import datetime

    return SimpleNamespace(
        settings=Settings(account_id=ACCOUNT, admin_principals=admins),
        store=Registry(),
        clock=lambda: datetime(2026, 12, 4, tzinfo=UTC),
    )


@pytest.fixture
def world() -> Any:
    """create-user made lsst-alice; an admin registered the SSO role (session names
    trusted) and a pipeline role acting as dave."""
    d = deps()
    identity.register_user(d, "alice", f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice", by="test")
    admin = Principal("ops-admin", is_admin=True, arn=ADMIN_USER)
    identity.register_role(d, admin, RegistrationSpec(arn=SSO_ROLE, trust_session_name=True))
    identity.register_role(d, admin, RegistrationSpec(arn=PIPELINE_ROLE, owner="dave"))
    return d


@pytest.mark.parametrize(
    "caller, owner, admin",
    [
        # the IAM user create-user made, with or without its path
        (f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice", "alice", False),
        (f"arn:aws:iam::{ACCOUNT}:user/lsst-alice", "alice", False),
        # a session of the SSO role: the session name is the person
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Astronomers_0a1b2c/carol", "carol", False),
        # any session of the pipeline role acts as its owner, whatever the session says
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/NightlyPipeline/admin", "dave", False),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/NightlyPipeline/alice", "dave", False),
        # admins, by full ARN; a role admin is admin in every session
        (ADMIN_USER, "ops-admin", True),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/PlatformAdmins/erin", "erin", True),
    ],
)
def test_callers_are_who_their_full_arn_says(world, caller, owner, admin):
    principal = resolve(world, caller)
    assert (principal.name, principal.is_admin, principal.arn) == (owner, admin, caller)


@pytest.mark.parametrize(
    "caller, says",
    [
        # the session name of an unregistered role is chosen by whoever assumed it
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/AnyRole/admin", "not registered"),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/AnyRole/alice", "not registered"),
        # a user named like an owner, or like the control plane's own user, is nobody
        (f"arn:aws:iam::{ACCOUNT}:user/alice", "not registered"),
        (f"arn:aws:iam::{ACCOUNT}:user/admin", "not registered"),
        # the same names from another account
        (f"arn:aws:iam::{OTHER_ACCOUNT}:user/lsstctl/lsst-alice", f"account {OTHER_ACCOUNT}"),
        (f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/PlatformAdmins/erin", f"account {OTHER_ACCOUNT}"),
        (f"arn:aws:iam::{ACCOUNT}:root", "root"),
        # the SSO role's session name must be an owner name
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Astronomers_0a1b2c/Carol@Example.org", "owner name"),
    ],
)
def test_anyone_else_is_refused_with_the_reason(world, caller, says):
    with pytest.raises(ForbiddenError, match=says):
        resolve(world, caller)


@pytest.mark.parametrize(
    "caller",
    [
        None,
        "",
        "alice",
        "arn:aws:iam::123:user/x",
        "arn:aws:s3:::bucket",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/OnlyRole",
    ],
)
def test_missing_or_garbled_identity_is_unauthenticated(world, caller):
    with pytest.raises(UnauthenticatedError):
        resolve(world, caller)


def test_without_its_account_the_control_plane_admits_nobody():
    d = deps(admins=ADMIN_USER)
    d.settings = Settings(admin_principals=ADMIN_USER)
    with pytest.raises(ForbiddenError, match="LSSTCTL_ACCOUNT_ID"):
        resolve(d, ADMIN_USER)


@pytest.mark.parametrize("admins", ["admin", "admin,ops", f"{ADMIN_USER},alice", f"arn:aws:iam::{ACCOUNT}:root"])
def test_admins_are_full_arns_never_names(admins):
    with pytest.raises(ModelError):
        Settings(account_id=ACCOUNT, admin_principals=admins)
    assert Settings().admin_principals == ""  # no default admin


def test_an_admin_may_be_one_session_of_a_role(world):
    d = deps(admins=f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Astronomers_0a1b2c/carol")
    d.store = world.store
    assert resolve(d, f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Astronomers_0a1b2c/carol").is_admin
    assert not resolve(d, f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Astronomers_0a1b2c/bob").is_admin


def test_a_removed_role_is_refused_again(world):
    admin = Principal("ops-admin", is_admin=True, arn=ADMIN_USER)
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/NightlyPipeline/run-1"
    assert resolve(world, caller).name == "dave"
    identity.remove_registration(world, admin, PIPELINE_ROLE)
    with pytest.raises(ForbiddenError):
        resolve(world, caller)
    with pytest.raises(NotFoundError):
        identity.remove_registration(world, admin, PIPELINE_ROLE)


def test_only_admins_manage_the_registry_and_only_for_this_account(world):
    alice = resolve(world, f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice")
    for attempt in (
        lambda: identity.register_role(world, alice, RegistrationSpec(arn=PIPELINE_ROLE, owner="alice")),
        lambda: identity.list_registrations(world, alice),
        lambda: identity.remove_registration(world, alice, PIPELINE_ROLE),
    ):
        with pytest.raises(ForbiddenError):
            attempt()
    assert world.store.items[parse_arn(PIPELINE_ROLE).key].owner == "dave"  # untouched
    admin = Principal("ops-admin", is_admin=True, arn=ADMIN_USER)
    with pytest.raises(ValidationError, match="account"):
        identity.register_role(
            world,
            admin,
            RegistrationSpec(arn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/Astronomers", trust_session_name=True),
        )
    registration, created = identity.register_role(world, admin, RegistrationSpec(arn=PIPELINE_ROLE, owner="dave"))
    assert not created and registration.registered_by == ADMIN_USER  # a repeat changes nothing


@pytest.mark.parametrize(
    "body",
    [
        {"arn": f"arn:aws:iam::{ACCOUNT}:user/bob", "owner": "bob"},  # users come from create-user
        {"arn": PIPELINE_ROLE},  # neither an owner nor trusted session names
        {"arn": PIPELINE_ROLE, "owner": "dave", "trust_session_name": True},  # both
        {"arn": PIPELINE_ROLE, "owner": "Dave!"},
        {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/NightlyPipeline/x", "owner": "dave"},
    ],
)
def test_registrations_say_exactly_one_thing(body):
    with pytest.raises(ModelError):
        RegistrationSpec.model_validate(body)


def test_local_names_are_sessions_of_the_local_people_role():
    d = deps()
    assert local_caller(d, "alice") == f"arn:aws:sts::{ACCOUNT}:assumed-role/lsstctl-local-people/alice"
    assert local_caller(d, ADMIN_USER) == ADMIN_USER
    with pytest.raises(ForbiddenError, match="not registered"):  # until the role is registered
        resolve(d, local_caller(d, "alice"))


def test_parse_admins_keys():
    assert parse_admins(f" {ADMIN_USER} , {ADMIN_ROLE} ") == {
        f"arn:aws:iam::{ACCOUNT}:user/ops-admin",
        f"arn:aws:iam::{ACCOUNT}:role/PlatformAdmins",
    }


def test_others_resources_look_missing():
    with pytest.raises(NotFoundError):
        ensure_visible(Principal("bob"), "alice", "cluster 'x'")
    ensure_visible(Principal("alice"), "alice", "cluster 'x'")
    ensure_visible(Principal("admin", is_admin=True), "alice", "cluster 'x'")
