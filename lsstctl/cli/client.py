"""The CLI's HTTP client: where the API is, who the caller is, and one request.

On AWS every request is signed with SigV4 (botocore's signer, the user's normal AWS
credentials: profile, environment, SSO, instance role), as API Gateway's IAM authorizer
expects. Against a local control plane (`make serve`) the caller names itself with the
identity header instead (`--as`, LSSTCTL_PRINCIPAL or `principal` in the config file).

Settings, first found wins: the command line, the environment (LSSTCTL_ENDPOINT,
LSSTCTL_PRINCIPAL, AWS_PROFILE, AWS_REGION), the config file (LSSTCTL_CONFIG, default
~/.config/lsstctl/config.toml: `endpoint`, `principal`, `profile`, `region`).

Retries: urllib3's Retry on 429/502/503/504 and connection failures, honouring Retry-After.
Repeating a POST or DELETE is safe: each carries an Idempotency-Key, so the API answers a
repeat with the first response and does the work once.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

PRINCIPAL_HEADER = "X-Lsst-Principal"
CONFIG_KEYS = ("endpoint", "principal", "profile", "region")
RETRY_STATUSES = (429, 502, 503, 504)


class CliError(Exception):
    """A failure the CLI reports as one line, with the exit code scripts can rely on."""

    def __init__(self, message: str, exit_code: int, body: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.body = body or {"error": {"code": "cli_error", "message": message}}


class ApiError(CliError):
    """The API answered with an error: its status, code, message and field."""

    def __init__(self, status: int, body: Any):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = str(error.get("code") or f"http_{status}")
        self.field = error.get("field")
        text = str(error.get("message") or "no message")
        where = f" [{self.field}]" if self.field and self.field not in text else ""
        super().__init__(
            f"{self.code} ({status}): {text}{where}",
            exit_code_for(status),
            body if isinstance(body, dict) and "error" in body else {"error": {"code": self.code, "message": text}},
        )


# Exit codes (README "The CLI"): 0 done; 1 unexpected; 2 usage; 3 not found; 4 refused (invalid
# or conflicting request); 5 not allowed (unauthenticated, forbidden); 6 the API unreachable or
# failing (5xx, after retries); 7 what was waited for failed (a cluster or job ended badly);
# 8 a wait ran out of time; 130 interrupted (Ctrl-C: the server-side work goes on).
EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_NOT_ALLOWED, EXIT_UNAVAILABLE, EXIT_FAILED, EXIT_TIMEOUT = 3, 4, 5, 6, 7, 8
EXIT_INTERRUPTED = 130


def exit_code_for(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (401, 403):
        return EXIT_NOT_ALLOWED
    if 400 <= status < 500 and status != 429:
        return EXIT_REFUSED
    return EXIT_UNAVAILABLE


def config_path() -> Path:
    return Path(os.environ.get("LSSTCTL_CONFIG") or Path.home() / ".config" / "lsstctl" / "config.toml")


def read_config(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}", 2) from None
    return {k: str(v) for k, v in data.items() if k in CONFIG_KEYS and v not in (None, "")}


def write_config(values: dict[str, str], path: Path | None = None) -> Path:
    """Merge `values` into the config file (TOML, one `key = "value"` per setting)."""
    path = path or config_path()
    merged = {**read_config(path), **{k: v for k, v in values.items() if v}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in sorted(merged.items())))
    return path


@dataclass
class Settings:
    endpoint: str
    principal: str | None = None
    profile: str | None = None
    region: str | None = None

    @classmethod
    def resolve(
        cls,
        endpoint: str | None = None,
        principal: str | None = None,
        profile: str | None = None,
        region: str | None = None,
    ) -> Settings:
        config = read_config()
        found = {
            "endpoint": endpoint or os.environ.get("LSSTCTL_ENDPOINT") or config.get("endpoint"),
            "principal": principal or os.environ.get("LSSTCTL_PRINCIPAL") or config.get("principal"),
            "profile": profile or os.environ.get("AWS_PROFILE") or config.get("profile"),
            "region": region or os.environ.get("AWS_REGION") or config.get("region"),
        }
        if not found["endpoint"]:
            raise CliError(
                "no API endpoint: pass --endpoint URL, set LSSTCTL_ENDPOINT, or run "
                "`lsstctl configure --endpoint URL` (make deploy prints the URL; make serve listens on "
                "http://127.0.0.1:8000)",
                2,
            )
        return cls(**found)  # type: ignore[arg-type]


def _region_of(endpoint: str) -> str | None:
    """API Gateway's host names the region: <id>.execute-api.<region>.amazonaws.com."""
    match = re.search(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com", endpoint)
    return match.group(1) if match else None


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 60, retries: int = 4):
        self.settings = settings
        self.base = settings.endpoint.rstrip("/")
        retry = urllib3.Retry(
            total=retries,
            backoff_factor=0.5,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every method: POST and DELETE carry an Idempotency-Key
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.http = urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(total=timeout))
        self._credentials: Any = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        """The JSON answer of a 2xx; ApiError otherwise; CliError when the API cannot be reached."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.base + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if idempotent if idempotent is not None else method in ("POST", "DELETE", "PUT"):
            headers["Idempotency-Key"] = str(uuid.uuid4())
        headers.update(self._identity(method, url, data, headers))
        try:
            response = self.http.request(method, url, body=data, headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise CliError(f"cannot reach the API at {self.base}: {error}", EXIT_UNAVAILABLE) from None
        try:
            answer = json.loads(response.data or b"{}")
        except ValueError:
            answer = {
                "error": {"code": f"http_{response.status}", "message": response.data[:200].decode(errors="replace")}
            }
        if response.status >= 400:
            raise ApiError(response.status, answer)
        return answer

    def _identity(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        if self.settings.principal:
            return {PRINCIPAL_HEADER: self.settings.principal}
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        region = self.settings.region or _region_of(self.base)
        if not region:
            raise CliError("no AWS region for signing: pass --region or set AWS_REGION", 2)
        request = AWSRequest(method=method, url=url, data=data or b"", headers=dict(headers))
        SigV4Auth(self._aws_credentials(), "execute-api", region).add_auth(request)
        return {k: v for k, v in request.headers.items() if k not in headers}

    def _aws_credentials(self) -> Any:
        if self._credentials is None:
            import botocore.session

            try:
                session = botocore.session.Session(profile=self.settings.profile)
                credentials = session.get_credentials()
            except Exception as error:  # botocore's ProfileNotFound, a broken config file
                raise CliError(f"AWS credentials: {error}", EXIT_NOT_ALLOWED) from None
            if credentials is None:
                raise CliError(
                    "no AWS credentials to sign with (aws configure, AWS_PROFILE, aws sso login); "
                    "against a local control plane name yourself with --as NAME",
                    EXIT_NOT_ALLOWED,
                )
            self._credentials = credentials  # refreshable (SSO, roles): frozen per request
        return self._credentials.get_frozen_credentials()
