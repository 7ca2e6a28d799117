"""What a head node's credentials reach: its own cluster's metrics and archive prefix, and
nothing of any other cluster's.

Checked structurally, with the IAM semantics the policies rely on written down here as a
small evaluator (one Allow statement at a time; no Deny is involved):
- an action matches when equal, case-insensitively (no wildcards are used in these
  policies, and the evaluator refuses any);
- in Resource, `*` matches any run of characters, `/` included, and `?` one character;
- `${aws:PrincipalTag/K}` in a condition value is replaced by the calling role's tag K
  before the comparison; when the role has no such tag the condition cannot match;
- StringEquals compares exactly and case-sensitively, StringLike with `*` and `?`; every key
  of a condition block must match (AND), any listed value of one key may (OR);
- `${aws:username}` in a Resource is the calling IAM user's name;
- ParallelCluster turns `HeadNode.Iam.S3Access` {BucketName, KeyName, EnableWriteAccess}
  into s3:PutObject (among others) on `arn:aws:s3:::<BucketName>/<KeyName>`.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest

from lsstctl.domain.models import ClusterSpec, cluster_id
from lsstctl.domain.pcluster_config import CLUSTER_TAG, render_cluster_config
from lsstctl.domain.policies import head_node_metrics_policy
from lsstctl.domain.scripts import queue_depth_namespace, render_publisher_install

_VARIABLE = re.compile(r"\$\{aws:PrincipalTag/([^}]+)\}")


def _values(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def _substitute(value: str, tags: dict[str, str]) -> str | None:
    missing = [k for k in _VARIABLE.findall(value) if k not in tags]
    return None if missing else _VARIABLE.sub(lambda m: tags[m.group(1)], value)


def allows(
    policy: dict[str, Any], *, action: str, resource: str, context: dict[str, str], tags: dict[str, str]
) -> bool:
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        actions = _values(statement["Action"])
        assert not any("*" in a or "?" in a for a in actions), "the evaluator does not do action wildcards"
        if action.lower() not in {a.lower() for a in actions}:
            continue
        # `${aws:username}` in a Resource is the calling user's name.
        patterns = [
            r.replace("${aws:username}", context.get("aws:username", "\0")) for r in _values(statement["Resource"])
        ]
        if not any(fnmatch.fnmatchcase(resource, r) for r in patterns):
            continue
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"StringEquals", "StringLike"}, "the evaluator knows StringEquals and StringLike only"
        equal = all(
            any(context.get(key) is not None and context[key] == _substitute(v, tags) for v in _values(want))
            for key, want in conditions.get("StringEquals", {}).items()
        )
        like = all(
            any(context.get(key) is not None and fnmatch.fnmatchcase(context[key], v) for v in _values(want))
            for key, want in conditions.get("StringLike", {}).items()
        )
        if equal and like:
            return True
    return False


def head_node_role_tags(cluster: str, owner: str = "alice") -> dict[str, str]:
    """CloudFormation gives the instance role the stack's tags: the config's Tags."""
    config = render(cluster, owner=owner)
    return {t["Key"]: t["Value"] for t in config["Tags"]}


def render(cluster: str, owner: str) -> dict[str, Any]:
    spec = ClusterSpec.model_validate(
        {"name": cluster, "queues": [{"name": "q", "instance_types": ["c5.large"], "max_nodes": 1}], "budget_usd": 5}
    )
    return render_cluster_config(
        spec,
        owner=owner,
        subnet_id="subnet-0123456789abcdef0",
        key_name="",
        archive_bucket="archive",
        archive_prefix=f"{owner}/{cluster}",
        metrics_policy_arn="arn:aws:iam::123456789012:policy/lsstctl-head-node-metrics",
        cluster_id=cluster_id(owner, cluster),
    )


def put_metrics(cluster_role: str, namespace: str, owner: str = "alice") -> bool:
    return allows(
        head_node_metrics_policy(),
        action="cloudwatch:PutMetricData",
        resource="*",
        context={"cloudwatch:namespace": namespace},
        tags=head_node_role_tags(cluster_role, owner),
    )


def namespace_of(cluster: str, owner: str = "alice") -> str:
    return queue_depth_namespace(cluster_id(owner, cluster))


def test_a_head_node_publishes_in_its_own_clusters_namespace_only():
    assert put_metrics("rubin-a", namespace_of("rubin-a"))
    # not another cluster's (the one whose idle alarm it would keep quiet)
    assert not put_metrics("rubin-a", namespace_of("rubin-b"))
    # nor that of another owner's cluster of the same name
    assert not put_metrics("rubin-a", namespace_of("rubin-a", owner="bob"))
    assert not put_metrics("rubin-a", namespace_of("rubin-a"), owner="bob")
    # nor a prefix, a suffix or a case variant of its own, nor the shared parent
    for namespace in (
        namespace_of("rubin-a") + "x",
        namespace_of("rubin-a")[:-1],
        namespace_of("rubin-a").upper(),
        queue_depth_namespace("rubin-a"),
        "LsstControlPlane/Slurm",
        "AWS/EC2",
        "Custom",
    ):
        assert not put_metrics("rubin-a", namespace), namespace
    # and a role without the cluster tag publishes nowhere
    assert not allows(
        head_node_metrics_policy(),
        action="cloudwatch:PutMetricData",
        resource="*",
        context={"cloudwatch:namespace": namespace_of("rubin-a")},
        tags={},
    )


def test_the_tag_the_condition_reads_is_the_clusters_id():
    assert head_node_role_tags("rubin-a")[CLUSTER_TAG] == cluster_id("alice", "rubin-a")
    assert head_node_role_tags("rubin-a", "bob")[CLUSTER_TAG] != head_node_role_tags("rubin-a")[CLUSTER_TAG]


def test_the_publisher_and_the_alarm_use_that_namespace():
    script = render_publisher_install(cluster=cluster_id("alice", "rubin-a"), region="us-east-1")
    assert f"--namespace {namespace_of('rubin-a')} " in script


def archive_writes(cluster: str, owner: str, key: str) -> bool:
    """s3:PutObject as ParallelCluster grants it from the config's S3Access."""
    config = render(cluster, owner)
    statements = [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{a['BucketName']}/{a['KeyName']}"}
        for a in config["HeadNode"]["Iam"]["S3Access"]
        if a.get("EnableWriteAccess")
    ]
    return allows(
        {"Statement": statements}, action="s3:PutObject", resource=f"arn:aws:s3:::archive/{key}", context={}, tags={}
    )


@pytest.mark.parametrize(
    "key, allowed",
    [
        ("alice/rubin-a/g1/j-1/out.fits", True),
        ("alice/rubin-b/g1/j-1/out.fits", False),  # another cluster of the same owner
        ("bob/rubin-a/g1/j-1/out.fits", False),  # another owner's cluster of the same name
        ("alice/rubin-a-2/g1/j-1/out.fits", False),  # a name that starts with this one
        ("alice/rubin-a", False),
    ],
)
def test_a_head_node_writes_its_own_archive_prefix_only(key, allowed):
    assert archive_writes("rubin-a", "alice", key) is allowed


def test_the_credentials_are_for_root_and_imdsv2_only():
    config = render("rubin-a", "alice")
    assert config["Imds"] == {"ImdsSupport": "v2.0"}
    assert config["HeadNode"]["Imds"] == {"Secured": True}
    policies = [p["Policy"] for p in config["HeadNode"]["Iam"]["AdditionalIamPolicies"]]
    assert "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy" not in policies
