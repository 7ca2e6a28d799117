"""Retries at the Lambda boundary (issue: teardown always wins).

The clean-up path's own clients: the teardown steps and the reconciler declare the `cleanup`
retry profile in their handlers, so their adapters and clients are their own (never the ones a
busy API or guard shares in the same process, as every function does in the emulator) and
retry in botocore's `legacy` mode, which has no retry quota to run dry. Every other handler
keeps the per-service policy.

A step whose AWS call failed transiently is re-run in place (it is idempotent) before it fails
into the workflow's Retry; the control plane's own "not yet" and permanent errors are not."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from lsstctl import wiring
from lsstctl.adapters.aws import CLEANUP_RETRY, RETRY_BY_SERVICE
from lsstctl.emulator.glue import LambdaContext
from lsstctl.errors import AwsUnavailableError, TransientError, ValidationError
from lsstctl.services.deps import Deps


def retries(deps: Deps) -> dict[str, Any]:
    return dict(deps.store.dynamodb.meta.client.meta.config.retries)


def invoke(module: str, event: dict[str, Any]) -> Any:
    handler = importlib.import_module(module).lambda_handler
    return handler(event, LambdaContext(function_name=module, invoked_function_arn="arn:test"))


@pytest.fixture
def seen(aws: None, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Deps, dict[str, Any]]]:
    """Each recorded handler call: the adapters it got and the retry policy its DynamoDB
    client has (clients are built on first use, inside the handler, as a step's are)."""
    wiring.reset()
    used: list[tuple[Deps, dict[str, Any]]] = []

    def record(deps: Deps, *_: Any) -> dict[str, Any]:
        used.append((deps, retries(deps)))
        return {"findings": []}

    monkeypatch.setattr("lambdas.reconciler.reconcile", record)
    monkeypatch.setattr("lsstctl.services.teardown_workflow.stop_fleet", record)
    return used


def test_the_teardown_steps_and_the_reconciler_retry_on_clients_of_their_own(
    seen: list[tuple[Deps, dict[str, Any]]],
) -> None:
    shared = wiring.deps()
    invoke("lambdas.reconciler", {})
    invoke("lambdas.teardown_steps", {"action": "stop_fleet", "cluster": "alice-x"})
    (reconciler_deps, reconciler_retries), (teardown_deps, teardown_retries) = seen
    assert reconciler_deps is teardown_deps  # one set for the clean-up profile ...
    assert reconciler_deps is not shared  # ... never the one the other paths share
    assert reconciler_deps.store.dynamodb is not shared.store.dynamodb
    cleanup = {"mode": CLEANUP_RETRY.mode, "total_max_attempts": CLEANUP_RETRY.max_attempts}
    assert reconciler_retries == teardown_retries == cleanup  # what their calls retried with
    assert retries(reconciler_deps) == cleanup
    default = RETRY_BY_SERVICE["dynamodb"]
    assert retries(shared) == {"mode": default.mode, "total_max_attempts": default.max_attempts}
    # Outside the clean-up handlers the profile is back to the default one.
    assert wiring.deps() is shared


def test_a_failing_clean_up_handler_leaves_the_default_profile_in_place(
    seen: list[tuple[Deps, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(deps: Deps, *_: Any) -> dict[str, Any]:
        raise RuntimeError("the pass failed")

    monkeypatch.setattr("lambdas.reconciler.reconcile", boom)
    with pytest.raises(RuntimeError):
        invoke("lambdas.reconciler", {})
    assert retries(wiring.deps())["mode"] == RETRY_BY_SERVICE["dynamodb"].mode


def unavailable() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": "ServiceUnavailable", "Message": "down"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
        "GetItem",
    )


@pytest.mark.parametrize(
    ("failure", "calls", "raised"),
    [
        (unavailable, 3, None),  # AWS failing twice: re-run in place, the third run succeeds
        (lambda: TransientError("the command is still being delivered"), 1, "TransientError"),
        (lambda: ValidationError("no such job"), 1, "ValidationError"),
    ],
    ids=["aws-unavailable", "not-yet", "permanent"],
)
def test_a_step_failing_on_aws_is_re_run_in_place_and_nothing_else_is(
    seen: list[tuple[Deps, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    failure: Any,
    calls: int,
    raised: str | None,
) -> None:
    monkeypatch.setenv("LSSTCTL_STEP_BACKOFF_SECONDS", "0")
    wiring.reset()
    runs: list[int] = []

    def flaky(deps: Deps, *_: Any) -> dict[str, Any]:
        runs.append(1)
        if len(runs) < 3:
            raise failure()
        return {"stopped": True}

    monkeypatch.setattr("lsstctl.services.teardown_workflow.stop_fleet", flaky)
    event = {"action": "stop_fleet", "cluster": "alice-x"}
    if raised is None:
        assert invoke("lambdas.teardown_steps", event) == {"stopped": True}
    else:
        with pytest.raises(Exception) as error:
            invoke("lambdas.teardown_steps", event)
        assert type(error.value).__name__ == raised  # the name the workflow's Retry/Catch matches
    assert len(runs) == calls


def test_a_step_failing_on_aws_every_time_fails_into_the_workflow_retry(
    seen: list[tuple[Deps, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LSSTCTL_STEP_BACKOFF_SECONDS", "0")
    wiring.reset()
    runs: list[int] = []

    def down(deps: Deps, *_: Any) -> dict[str, Any]:
        runs.append(1)
        raise unavailable()

    monkeypatch.setattr("lsstctl.services.teardown_workflow.stop_fleet", down)
    with pytest.raises(AwsUnavailableError):
        invoke("lambdas.teardown_steps", {"action": "stop_fleet", "cluster": "alice-x"})
    assert len(runs) == wiring.deps().settings.step_attempts == 3
