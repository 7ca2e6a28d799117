"""The least-privilege IAM policy of a user created by the control plane (pure).

A user may call the control plane's API, open SSM sessions only on instances tagged as
theirs, and read only their own archived results. Nothing else: no EC2 launches, no IAM,
no access to other users' clusters or data.
"""
from __future__ import annotations

from typing import Any

from lsstctl.domain.pcluster_config import OWNER_TAG


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
