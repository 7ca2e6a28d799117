"""IAM user provisioning with the access key kept in Secrets Manager.

Create-or-converge: every step looks for what exists first, so a repeated or half-failed
request ends with exactly one user, one policy and one working key stored in one secret.
The control plane writes the key and never reads it back: the key's id is a tag of the
secret, and the secret's resource policy (lsstctl.domain.policies.key_secret_policy)
denies reading it to all but the owner's own principals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from lsstctl.adapters.aws import LazyClient, retrying

MAX_KEYS = 2  # IAM's limit per user
KEY_ID_TAG = "lsstctl:access-key-id"  # the secret's tag naming the key it holds (not secret)


def _code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


class IamUserProvisioner:
    iam = LazyClient("iam")
    secrets = LazyClient("secretsmanager")

    def __init__(self, *, path: str, iam: Any = None, secrets: Any = None):
        self._path = path
        self.iam = iam
        self.secrets = secrets

    def ensure_user(
        self,
        *,
        name: str,
        owner: str,
        policy_name: str,
        policy: dict[str, Any],
        secret_name: str,
        tags: dict[str, str],
        key_policy: Callable[[str], dict[str, Any]] | None = None,
    ) -> tuple[str, str]:
        """`key_policy(user_arn)`: the secret's resource policy, in force before a key is
        stored in it (and put again on every call, so it follows new registrations)."""
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        arn = self._ensure_iam_user(name, tag_list)
        self.iam.put_user_policy(UserName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
        self.iam.tag_user(UserName=name, Tags=tag_list)
        secret_arn = self._ensure_key_secret(name, secret_name, tag_list, key_policy(arn) if key_policy else None)
        return arn, secret_arn

    def list_managed_users(self) -> list[str]:
        """The IAM users under this provisioner's path (one paginated call)."""
        pages = self.iam.get_paginator("list_users").paginate(PathPrefix=self._path)
        return [user["UserName"] for page in pages for user in page["Users"]]

    def existing(self, name: str, secret_name: str) -> tuple[str, str] | None:
        """(user ARN, secret ARN) when both exist, without reading the secret's value."""
        try:
            arn = self.iam.get_user(UserName=name)["User"]["Arn"]
            secret_arn = self.secrets.describe_secret(SecretId=secret_name)["ARN"]
        except ClientError as error:
            if _code(error) in {"NoSuchEntity", "ResourceNotFoundException"}:
                return None
            raise
        return arn, secret_arn

    def owner_of(self, name: str, owner_tag: str) -> str | None:
        try:
            tags = self.iam.list_user_tags(UserName=name)["Tags"]
        except ClientError as error:
            if _code(error) == "NoSuchEntity":
                return None
            raise
        return next((t["Value"] for t in tags if t["Key"] == owner_tag), None)

    def _ensure_iam_user(self, name: str, tags: list[dict[str, str]]) -> str:
        try:
            return self.iam.get_user(UserName=name)["User"]["Arn"]
        except ClientError as error:
            if _code(error) != "NoSuchEntity":
                raise
        try:
            return self.iam.create_user(UserName=name, Path=self._path, Tags=tags)["User"]["Arn"]
        except ClientError as error:
            if _code(error) == "EntityAlreadyExists":  # a racing request created it
                return self.iam.get_user(UserName=name)["User"]["Arn"]
            raise

    def _stored_key_id(self, secret_name: str) -> tuple[str | None, str | None]:
        """(secret ARN, id of the access key stored in it) or (None, None) when there is no
        secret. The id is the secret's tag: the control plane never reads the key itself."""
        try:
            secret = self.secrets.describe_secret(SecretId=secret_name)
        except ClientError as error:
            if _code(error) == "ResourceNotFoundException":
                return None, None
            raise
        tags = {t["Key"]: t["Value"] for t in secret.get("Tags", [])}
        return secret["ARN"], tags.get(KEY_ID_TAG)

    def _ensure_key_secret(
        self, user: str, secret_name: str, tags: list[dict[str, str]], key_policy: dict[str, Any] | None
    ) -> str:
        secret_arn, stored_key = self._stored_key_id(secret_name)
        if secret_arn is None:
            # The secret first, empty, so that its policy is in force before it holds a key.
            secret_arn = self._create_secret(secret_name, user, tags)
        if key_policy is not None:
            self.secrets.put_resource_policy(
                SecretId=secret_arn, ResourcePolicy=json.dumps(key_policy), BlockPublicPolicy=True
            )
        keys = [k["AccessKeyId"] for k in self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        if stored_key in keys:
            self._delete_keys(user, [k for k in keys if k != stored_key])
            return secret_arn
        # No usable stored key: drop stray keys (never handed out), mint one, store it.
        self._delete_keys(user, keys)
        key = self.iam.create_access_key(UserName=user)["AccessKey"]
        payload = json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]})
        try:
            self.secrets.put_secret_value(SecretId=secret_arn, SecretString=payload)
            self.secrets.tag_resource(SecretId=secret_arn, Tags=[{"Key": KEY_ID_TAG, "Value": key["AccessKeyId"]}])
        except ClientError:
            # Never leave a key that nobody can retrieve; the caller's retry mints another.
            retrying(lambda: self._delete_keys(user, [key["AccessKeyId"]]))
            raise
        return secret_arn

    def _create_secret(self, secret_name: str, user: str, tags: list[dict[str, str]]) -> str:
        try:
            arn: str = self.secrets.create_secret(
                Name=secret_name, Description=f"Access key of IAM user {user} (managed by lsstctl)", Tags=tags
            )["ARN"]
            return arn
        except ClientError as error:
            if _code(error) != "ResourceExistsException":  # a racing request created it
                raise
        return str(self.secrets.describe_secret(SecretId=secret_name)["ARN"])

    def _delete_keys(self, user: str, key_ids: list[str]) -> None:
        for key_id in key_ids:
            try:
                self.iam.delete_access_key(UserName=user, AccessKeyId=key_id)
            except ClientError as error:
                if _code(error) != "NoSuchEntity":
                    raise
