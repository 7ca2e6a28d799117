"""create-user: a least-privilege IAM user whose key lives in Secrets Manager."""

from __future__ import annotations

from typing import Any

from lsstctl.domain.models import User, UserSpec, iso
from lsstctl.domain.pcluster_config import OWNER_TAG, PROJECT, PROJECT_TAG
from lsstctl.domain.policies import key_secret_policy, user_policy
from lsstctl.errors import NotFoundError
from lsstctl.services.deps import Deps
from lsstctl.services.identity import Principal, ensure_may_act_for, ensure_visible, register_user

POLICY_NAME = "lsstctl-operate-own-clusters"


def create_user(deps: Deps, principal: Principal, spec: UserSpec) -> User:
    """Create or converge. A person may provision their own user; admins anyone's."""
    ensure_may_act_for(principal, spec.name, field="name")
    s = deps.settings
    iam_name = f"{s.user_name_prefix}{spec.name}"
    api_arn = s.api_execute_arn or f"arn:aws:execute-api:{s.region}:*:*/*"
    user_arn, secret_arn = deps.users.ensure_user(
        name=iam_name,
        owner=spec.name,
        policy_name=POLICY_NAME,
        policy=user_policy(owner=spec.name, region=s.region, api_arn=api_arn, archive_bucket=s.archive_bucket),
        secret_name=f"{s.secret_prefix}{spec.name}",
        tags={OWNER_TAG: spec.name, PROJECT_TAG: PROJECT},
        key_policy=lambda user_arn: key_policy(deps, spec.name, user_arn),
    )
    return _record(deps, spec.name, user_arn, secret_arn, by=principal.arn or principal.name)


def key_policy(deps: Deps, owner: str, user_arn: str) -> dict[str, Any]:
    """Who may read the owner's key: the IAM user itself and the roles registered for the
    owner (every session of a role acting as the owner; only the owner's own sessions of a
    role whose session name is trusted). Re-put on every create-user."""
    registered = [r for r in deps.store.list_registrations() if r.kind == "role"]
    return key_secret_policy(
        owner=owner,
        readers=[user_arn, *(r.arn for r in registered if r.owner == owner)],
        session_roles=[r.arn for r in registered if r.trust_session_name],
    )


def _record(deps: Deps, name: str, user_arn: str, secret_arn: str, *, by: str) -> User:
    # The IAM user is admitted as its owner from now on (its calls carry its ARN).
    register_user(deps, name, user_arn, by)
    existing = deps.store.get_user(name)
    user = User(
        name=name,
        owner=name,
        iam_user_name=f"{deps.settings.user_name_prefix}{name}",
        iam_user_arn=user_arn,
        secret_arn=secret_arn,
        policy_name=POLICY_NAME,
        created_at=existing.created_at if existing else iso(deps.clock()),
    )
    return deps.store.put_user(user)


def adopt_user(deps: Deps, name: str) -> User | None:
    """Record a user whose IAM user and secret exist but whose request failed before its
    record was written (the reconciler). The key is not read: the owner's next
    create-user converges it if it went stale."""
    s = deps.settings
    found = deps.users.existing(f"{s.user_name_prefix}{name}", f"{s.secret_prefix}{name}")
    return _record(deps, name, *found, by="reconciler") if found else None


def get_user(deps: Deps, principal: Principal, name: str) -> User:
    user = deps.store.get_user(name)
    if user is None:
        raise NotFoundError(f"user '{name}' not found")
    ensure_visible(principal, user.owner, f"user '{name}'")
    return user


def list_users(deps: Deps, principal: Principal) -> list[User]:
    return deps.store.list_users(None if principal.is_admin else principal.name)
