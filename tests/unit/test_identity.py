"""Caller identity: IAM ARNs (or local names) to owners; admins see everything."""
import pytest

from lsstctl.errors import NotFoundError, UnauthenticatedError
from lsstctl.services.identity import Principal, ensure_visible, principal_from

ADMINS = frozenset({"admin", "ops-admin"})


@pytest.mark.parametrize(
    "identity, name, admin",
    [
        ("arn:aws:iam::123456789012:user/lsstctl/lsst-alice", "alice", False),
        ("arn:aws:iam::123456789012:user/bob", "bob", False),
        ("arn:aws:sts::123456789012:assumed-role/Astronomer/carol", "carol", False),
        ("arn:aws:iam::123456789012:user/ops-admin", "ops-admin", True),
        ("alice", "alice", False),
        ("admin", "admin", True),
    ],
)
def test_principal_names(identity, name, admin):
    principal = principal_from(identity, admins=ADMINS, user_prefix="lsst-")
    assert (principal.name, principal.is_admin) == (name, admin)


@pytest.mark.parametrize("identity", [None, "", "not a name!"])
def test_missing_or_garbled_identity_is_unauthenticated(identity):
    with pytest.raises(UnauthenticatedError):
        principal_from(identity, admins=ADMINS)


def test_others_resources_look_missing():
    with pytest.raises(NotFoundError):
        ensure_visible(Principal("bob"), "alice", "cluster 'x'")
    ensure_visible(Principal("alice"), "alice", "cluster 'x'")
    ensure_visible(Principal("admin", is_admin=True), "alice", "cluster 'x'")
