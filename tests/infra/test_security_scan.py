"""The security review a reviewer would run: checkov, offline, over the templates we ship.

Every finding is fixed or suppressed in place (the resource's Metadata.checkov.skip) with a
one-line reason; a suppression without a reason is a finding too. checkov lives in its own
virtualenv (`make deps` builds .venv-tools from requirements-tools.txt): its pins conflict
with the control plane's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "control-plane.yaml"
CHECKOV = Path(os.environ.get("LSSTCTL_CHECKOV", ROOT / ".venv-tools" / "bin" / "checkov"))


def checkov(path: Path) -> dict[str, Any]:
    """checkov's JSON report of one CloudFormation template (no network: no platform, no
    version check, no external checks)."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make deps`"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [
            str(CHECKOV),
            "--file",
            str(path),
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
            "--no-fail-on-crash",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def findings(report: dict[str, Any]) -> list[str]:
    return [f"{r['check_id']} {r['resource']}: {r['check_name']}" for r in report["results"]["failed_checks"]]


def test_the_template_passes_checkov() -> None:
    report = checkov(TEMPLATE)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] > 50
    assert findings(report) == []


def test_every_suppression_says_why() -> None:
    template, matches = decode(str(TEMPLATE))
    assert not matches and template is not None
    unexplained = [
        f"{name} {skip.get('id')}"
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
        if len(str(skip.get("comment", "")).strip()) < 20 or not str(skip.get("id", "")).startswith("CKV")
    ]
    assert unexplained == []


def test_the_scan_fails_a_careless_template(tmp_path: Path) -> None:
    """The scan is live: a bucket and a table without their settings are reported."""
    careless = tmp_path / "careless.json"
    careless.write_text(
        json.dumps(
            {
                "AWSTemplateFormatVersion": "2010-09-09",
                "Resources": {
                    "Open": {"Type": "AWS::S3::Bucket", "Properties": {}},
                    "Loose": {
                        "Type": "AWS::DynamoDB::Table",
                        "Properties": {
                            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                            "BillingMode": "PAY_PER_REQUEST",
                        },
                    },
                },
            }
        )
    )
    found = {f.split()[0] for f in findings(checkov(careless))}
    assert {"CKV_AWS_18", "CKV_AWS_28"} <= found


def star_grants(template: dict[str, Any]) -> list[str]:
    """Where an Allow statement grants every action (or a service's every action) on "*"."""
    offending: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "Action" in node and "Effect" in node and node["Effect"] == "Allow":
                actions = node["Action"] if isinstance(node["Action"], list) else [node["Action"]]
                resources = node.get("Resource", [])
                resources = resources if isinstance(resources, list) else [resources]
                if "*" in resources and any(str(a) == "*" or str(a).endswith(":*") for a in actions):
                    offending.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(template["Resources"], "Resources")
    return offending


def test_no_star_action_on_star_resource() -> None:
    template, _ = decode(str(TEMPLATE))
    assert template is not None
    assert star_grants(template) == []
    careless = {
        "Resources": {
            "R": {
                "Properties": {
                    "Policies": [
                        {"PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]}}
                    ]
                }
            }
        }
    }
    assert star_grants(careless) == ["Resources.R.Properties.Policies[0].PolicyDocument.Statement[0]"]
