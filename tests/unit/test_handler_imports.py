"""Each handler imports what its path needs and nothing else: a cold start pays for every
module its import pulls in (bench/perf.py measures how long). Run in a fresh interpreter
with a deployed function's environment (tracing off, as the template's default)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.perf import HANDLERS, lambda_env

# Never at import, anywhere: the X-Ray SDK (only where tracing is on), the local test double,
# the CLI's and the tests' libraries, ParallelCluster's library (the engine imports it on
# its first call), Slack's SDK (its first use).
NOWHERE = {
    "aws_xray_sdk",
    "moto",
    "lsstctl.emulator",
    "lsstctl.cli",
    "click",
    "rich",
    "matplotlib",
    "plotext",
    "pcluster",
    "slack_sdk",
}
# And per handler, the services of other paths.
NOT_ON = {
    "lambdas.guard": {"lsstctl.services.chatops", "lsstctl.services.reconciler", "lsstctl.services.launch_workflow"},
    "lambdas.idle_alarm": {"lsstctl.services.chatops", "lsstctl.services.reconciler", "lsstctl.services.jobs"},
    "lambdas.budget_alarm": {"lsstctl.services.chatops", "lsstctl.services.reconciler", "lsstctl.services.jobs"},
    "lambdas.reconciler": {"lsstctl.services.chatops", "lsstctl.services.jobs", "lsstctl.services.teardown_workflow"},
    "lambdas.launch_steps": {"lsstctl.services.chatops", "lsstctl.services.reconciler", "lsstctl.services.jobs"},
    "lambdas.teardown_steps": {"lsstctl.services.chatops", "lsstctl.services.reconciler"},
    "lambdas.job_steps": {
        "lsstctl.services.chatops",
        "lsstctl.services.reconciler",
        "lsstctl.services.launch_workflow",
    },
    "lambdas.chatops": {"lsstctl.services.reconciler", "lsstctl.services.launch_workflow"},
    "lambdas.engine": {"lsstctl.services.clusters", "lsstctl.services.costs", "lsstctl.services.jobs"},
    "app": {"lsstctl.services.reconciler", "lsstctl.services.launch_workflow", "lsstctl.services.teardown_workflow"},
}


def imported(module: str, **env: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        env={**lambda_env(), **env},
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_every_handler_has_its_list() -> None:
    assert set(NOT_ON) == set(HANDLERS.values())


@pytest.mark.parametrize("module", sorted(NOT_ON))
def test_a_handler_imports_only_what_its_path_needs(module: str) -> None:
    modules = imported(module)
    assert module in modules
    unwanted = sorted(m for m in modules if m in NOWHERE | NOT_ON[module] or m.split(".")[0] in NOWHERE)
    unwanted += sorted(m for m in modules if any(m.startswith(p + ".") for p in NOWHERE | NOT_ON[module]))
    assert unwanted == [], f"{module} imports {unwanted}"


def test_with_tracing_on_the_handlers_bring_the_xray_sdk() -> None:
    """What the check above would see: tracing on (TraceHandlers=true) costs the SDK's import."""
    assert "aws_xray_sdk.core" in imported("lambdas.guard", POWERTOOLS_TRACE_DISABLED="false")
