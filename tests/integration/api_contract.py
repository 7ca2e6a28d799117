"""The API under test, in-process: chalice.test.Client on moto, every answer checked
against openapi.yaml (see test_openapi_contract.py for the rules). Shared by the API tests."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from lsstctl.domain.models import cluster_id

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "chalice_app"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SPEC_PATH = ROOT / "openapi.yaml"
SPEC_URI = "urn:lsstctl:openapi"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
REGION = "us-east-1"
OWNER, OTHER, ADMIN = "alice", "bob", "admin"
CLUSTER = "rubin-contract"
CLUSTER_ID = cluster_id(OWNER, CLUSTER)  # alice's cluster, as AWS names it

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")


def cluster_spec(name: str = CLUSTER, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "queues": [{"name": "compute", "instance_types": ["c5.large"], "min_nodes": 0, "max_nodes": 2}],
        "stack_tag": "w_2026_47",
        "budget_usd": 20,
        **overrides,
    }


JOB = {"name": "hello", "command": "echo hello", "cores": 1, "walltime_minutes": 5}


# the document ----------------------------------------------------------------------------
def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _closed(node: Any) -> Any:
    """Every object schema with properties and no additionalProperties becomes closed
    (so the document composes objects with anyOf, never allOf)."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _closed(value)
    elif isinstance(node, list):
        for value in node:
            _closed(value)
    return node


class Contract:
    """Looks up what the document promises for a call, and checks answers against it."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        closed = _closed(copy.deepcopy(spec))
        self._registry = Registry().with_resource(SPEC_URI, DRAFT4.create_resource(closed))

    def _at(self, pointer: str) -> Any:
        node: Any = self.spec
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _follow(self, pointer: str) -> str:
        """The pointer of the object itself when the one at `pointer` is a $ref."""
        node = self._at(pointer)
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self._at(pointer)
        return pointer

    def _validator(self, schema_pointer: str, cls: Any) -> Any:
        schema = {"$ref": f"{SPEC_URI}#{schema_pointer}"}
        return cls(schema, registry=self._registry, format_checker=oas30_format_checker)

    def operation(self, route: str, method: str) -> dict[str, Any]:
        operation = self.spec["paths"].get(route, {}).get(method.lower())
        if operation is None:
            pytest.fail(f"openapi.yaml does not document {method.upper()} {route}")
        return operation

    def response_pointer(self, route: str, method: str, status: int) -> str:
        """Where the documented response for this status is; fails if there is none."""
        responses = self.operation(route, method).get("responses", {})
        if str(status) not in responses:
            pytest.fail(
                f"{method.upper()} {route} answered {status}, which openapi.yaml does not document "
                f"(documented: {', '.join(sorted(responses))})"
            )
        return self._follow(_pointer("paths", route, method.lower(), "responses", str(status)))

    def check_response(self, route: str, method: str, status: int, headers: dict[str, str], body: Any) -> None:
        pointer = self.response_pointer(route, method, status)
        documented = self._at(pointer)
        problems: list[str] = []
        # The body, judged by the documented schema
        if "application/json" in documented.get("content", {}):
            validator = self._validator(f"{pointer}/content/application~1json/schema", OAS30ReadValidator)
            for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
                problems.append(f"at /{'/'.join(map(str, error.absolute_path))}: {error.message}")
        elif body:
            problems.append(f"documented without a body, got {body!r}")
        # Every required documented header, with a valid value
        present = {k.lower(): v for k, v in headers.items()}
        for name in documented.get("headers", {}):
            header_pointer = self._follow(f"{pointer}/headers/{name}")
            if name.lower() not in present:
                if self._at(header_pointer).get("required"):
                    problems.append(f"no {name} header")
                continue
            validator = self._validator(f"{header_pointer}/schema", OAS30ReadValidator)
            problems += [f"header {name}: {e.message}" for e in validator.iter_errors(present[name.lower()])]
        assert not problems, (
            f"{method.upper()} {route} {status} does not match openapi.yaml:\n  "
            + "\n  ".join(problems)
            + f"\nbody: {json.dumps(body, indent=1)}"
        )

    def schema_errors(self, schema: str, value: Any) -> list[str]:
        """What the component schema `schema` (closed, read direction) finds wrong with `value`."""
        validator = self._validator(_pointer("components", "schemas", schema), OAS30ReadValidator)
        return [
            f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        ]

    def check_request(self, route: str, method: str, body: Any) -> None:
        """A body the server accepted must be one the document accepts too."""
        self.operation(route, method)
        pointer = _pointer("paths", route, method.lower(), "requestBody", "content", "application/json", "schema")
        errors = list(self._validator(pointer, OAS30WriteValidator).iter_errors(body))
        assert not errors, f"{method.upper()} {route}: openapi.yaml rejects an accepted body: {errors[0].message}"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def contract(spec: dict[str, Any]) -> Contract:
    return Contract(spec)


@pytest.fixture(scope="module")
def chalice_app() -> Any:
    import app  # chalice_app/app.py

    return app.app


def operations(spec: dict[str, Any], *, signed_by_slack: bool = False) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The document's operations called by people with IAM identities (the default), or
    the one Slack calls, signed with the Slack app's secret."""
    for route, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS and slack_signed(operation) == signed_by_slack:
                yield route, method.upper(), operation


def slack_signed(operation: dict[str, Any]) -> bool:
    return operation.get("security") == [{"slackSignature": []}]


# the API, in-process on moto --------------------------------------------------------------
@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Api:
    """Calls a route through chalice.test.Client and checks the answer against the document."""

    client: Any
    contract: Contract

    def call(
        self,
        method: str,
        route: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        who: str | None = OWNER,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        **params: str,
    ) -> Reply:
        sent = {"Content-Type": "application/json"}
        if who is not None:
            sent["X-Lsst-Principal"] = who
        if key is not None:
            sent["Idempotency-Key"] = key
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        url = route.format(**params) + (f"?{urlencode(query)}" if query else "")
        response = self.client.http.request(method, url, headers=sent, body=data)
        reply = Reply(response.status_code, response.json_body, dict(response.headers))
        self.contract.check_response(route, method, reply.status, reply.headers, reply.body)
        if body is not None and 200 <= reply.status < 300:
            self.contract.check_request(route, method, body)
        return reply


SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the contract tests' Slack app


def _create_resources() -> dict[str, str]:
    """What the API touches: state and idempotency tables, event bus, state machines."""
    import boto3

    from lsstctl.emulator.bootstrap import AUDIT_LOG_GROUP, create_tables, register_local_people

    create_tables(boto3.Session(region_name=REGION))
    people = register_local_people(boto3.Session(region_name=REGION))
    boto3.client("events", region_name=REGION).create_event_bus(Name="lsstctl-events")
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=AUDIT_LOG_GROUP)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    # Executions are recorded, never run: this test is about the HTTP contract.
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
    role = "arn:aws:iam::123456789012:role/lsstctl-test"
    return {
        **people,
        **{
            f"LSSTCTL_{kind.upper()}_STATE_MACHINE_ARN": sfn.create_state_machine(
                name=f"lsstctl-{kind}", definition=definition, roleArn=role
            )["stateMachineArn"]
            for kind in ("launch", "teardown", "job", "chatops")
        },
        "LSSTCTL_SLACK_SIGNING_SECRET_ARN": boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="lsstctl/chatops/slack-signing-secret", SecretString=json.dumps({"signing_secret": SLACK_SECRET})
        )["ARN"],
        "LSSTCTL_CHAT_URL_PREFIX": "https://hooks.slack.com/",
        "LSSTCTL_AUDIT_LOG_GROUP": AUDIT_LOG_GROUP,
    }


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, chalice_app: Any, contract: Contract) -> Iterator[Api]:
    from chalice.test import Client
    from moto import mock_aws

    from lsstctl import wiring

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "LSSTCTL_REGION": REGION,
        "LSSTCTL_TRUST_PRINCIPAL_HEADER": "true",
        "LSSTCTL_CONFIG_VALIDATION": "schema",
        "LSSTCTL_CLUSTER_SUBNET_ID": "subnet-0123456789abcdef0",
        "LSSTCTL_CLUSTER_KEY_NAME": "lsstctl-test",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        for name, value in _create_resources().items():
            monkeypatch.setenv(name, value)
        wiring.reset()
        with Client(chalice_app) as client:
            yield Api(client, contract)
    wiring.reset()


def make_ready(name: str, owner: str = OWNER) -> None:
    """Play the launch workflow's transitions for `owner`'s cluster `name` (its executions
    do not run here)."""
    from lsstctl import wiring
    from lsstctl.domain.models import ClusterState
    from lsstctl.services.clusters import transition

    for state in (ClusterState.LAUNCHING, ClusterState.INSTALLING, ClusterState.READY):
        transition(wiring.deps(), cluster_id(owner, name), state, "contract test")
