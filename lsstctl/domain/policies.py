"""The least-privilege IAM policy of a user created by the control plane (pure).

A user may call the control plane's API, open SSM sessions only on instances tagged as
theirs, and read only their own archived results. Nothing else: no EC2 launches, no IAM,
no access to other users' clusters or data.
"""

from __future__ import annotations

from typing import Any

from lsstctl.domain.pcluster_config import CLUSTER_TAG, OWNER_TAG
from lsstctl.domain.scripts import QUEUE_DEPTH_NAMESPACE_PREFIX

HEAD_NODE_METRICS_POLICY = "lsstctl-head-node-metrics"


def user_policy(*, owner: str, region: str, api_arn: str, archive_bucket: str) -> dict[str, Any]:
    owned = {"StringEquals": {f"aws:ResourceTag/{OWNER_TAG}": owner}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "CallControlPlaneApi", "Effect": "Allow", "Action": "execute-api:Invoke", "Resource": api_arn},
            {
                "Sid": "ShellOnOwnHeadNodes",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": f"arn:aws:ec2:{region}:*:instance/*",
                "Condition": owned,
            },
            {
                "Sid": "SessionDocument",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": f"arn:aws:ssm:{region}::document/AWS-StartSSHSession",
            },
            {
                "Sid": "OwnSessions",
                "Effect": "Allow",
                "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
                "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*",
            },
            {
                "Sid": "ListOwnResults",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{archive_bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{owner}/*"]}},
            },
            {
                "Sid": "ReadOwnResults",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{archive_bucket}/{owner}/*",
            },
        ],
    }


def head_node_metrics_policy() -> dict[str, Any]:
    """What a head node may publish: metrics in its own cluster's namespace, and nowhere else.

    IAM semantics relied on: a head node's calls are made by a session of the instance
    role ParallelCluster creates for that cluster; CloudFormation gives that role the
    stack's tags, which are the config's Tags (so `lsstctl:cluster` = the cluster's name);
    `${aws:PrincipalTag/lsstctl:cluster}` is replaced by the calling role's tag value
    before the condition is compared, and is absent (so the condition fails) for a role
    without the tag; `cloudwatch:namespace` is the request's Namespace; StringEquals is
    an exact, case-sensitive comparison. PutMetricData has no resource-level permissions,
    hence Resource "*"; the instance role cannot tag itself (no iam:TagRole), so a shell on
    one head node cannot take another cluster's name."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "QueueDepthOfOwnClusterOnly",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "cloudwatch:namespace": f"{QUEUE_DEPTH_NAMESPACE_PREFIX}/${{aws:PrincipalTag/{CLUSTER_TAG}}}"
                    }
                },
            }
        ],
    }


def key_secret_policy(*, owner: str, readers: list[str], session_roles: list[str]) -> dict[str, Any]:
    """The resource policy of a created user's key secret: nobody reads it but the owner's
    own principals — the IAM user it holds the key of and the roles an admin registered as
    acting for the owner (`readers`, as aws:PrincipalArn gives them), and sessions named
    after the owner of the roles whose session name is trusted (`session_roles`). Admins
    and the control plane itself are denied like everyone else; the principals admitted
    still need an identity policy that allows `secretsmanager:GetSecretValue`."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OnlyTheOwnersPrincipalsReadTheKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": sorted({*readers, *session_roles})}},
        }
    ]
    if session_roles:
        statements.append(
            {
                "Sid": "OnlyTheOwnersOwnSessions",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"aws:PrincipalArn": sorted(set(session_roles))},
                    # An assumed role's user id is "<role id>:<session name>".
                    "StringNotLike": {"aws:userid": f"*:{owner}"},
                },
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
