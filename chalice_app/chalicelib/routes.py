"""Routes: parse the request, call one service function, map the result or the error.

Errors are mapped once, in `handle`: domain errors to their HTTP status with
{"error": {"code", "message", "field"?}}, body validation to 400 naming the field, AWS
failures as `lsstctl.adapters.aws.classify` says (transient: 503 `aws_unavailable` with
Retry-After; permanent: 502 `aws_error`), and anything else — a real bug — to a 500
without internals, whose stack trace and request id go to the log.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from chalice import Blueprint, IAMAuthorizer, Response
from pydantic import BaseModel
from pydantic import ValidationError as ModelError

from lsstctl import wiring
from lsstctl.adapters.aws import classify
from lsstctl.domain.chatops import ChannelSpec, ChatIdentitySpec
from lsstctl.domain.models import ClusterChange, ClusterSpec, JobSpec, ProjectSpec, QuotaSpec, UserSpec, from_iso
from lsstctl.domain.principals import RegistrationSpec
from lsstctl.errors import (
    RateLimitedError,
    RequestInProgressError,
    TransientError,
    UnauthenticatedError,
    ValidationError,
)
from lsstctl.observability import bind, bind_more, current_keys, logger, metrics, tracer
from lsstctl.services import audit, chatops, clusters, costs, jobs, quotas, quotes, ratelimit, users
from lsstctl.services import identity as identity_module
from lsstctl.services.idempotency import once
from lsstctl.services.identity import Principal

api = Blueprint(__name__)
iam = IAMAuthorizer()

PRINCIPAL_HEADER = "x-lsst-principal"
IDEMPOTENCY_HEADER = "idempotency-key"


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        body={"error": body}, status_code=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _principal() -> Principal:
    """The caller, by its full ARN (API Gateway's SigV4 check), through the registry."""
    deps = wiring.deps()
    settings = deps.settings
    request = api.current_request
    identity = (request.context or {}).get("identity") or {}
    caller = identity.get("userArn")
    if settings.trust_principal_header and request.headers.get(PRINCIPAL_HEADER):
        caller = identity_module.local_caller(deps, request.headers[PRINCIPAL_HEADER])
    if not caller:
        raise UnauthenticatedError(
            "sign the request with AWS SigV4"
            + (f" or, locally, send the {PRINCIPAL_HEADER} header" if settings.trust_principal_header else "")
        )
    bind_more(caller=caller)  # the audit trail names a refused caller too
    principal = identity_module.resolve(deps, caller)
    bind_more(caller=principal.arn or caller, owner=principal.name)
    if request.method in ("POST", "PUT", "DELETE"):
        ratelimit.admit(deps, principal)
    return principal


def _body() -> Any:
    raw = api.current_request.raw_body
    if not raw:
        raise ValidationError("request body must be a JSON object", field="body")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ValidationError(f"request body is not valid JSON: {error}", field="body") from error


def _model(model: type[BaseModel], data: Any) -> Any:
    """Parse a request body; every problem is a 400 naming the field (all are listed)."""
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ModelError as error:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in error.errors()]
        first = details[0]
        raise ValidationError(f"{first['field']}: {first['message']}", field=first["field"], details=details) from error


def handle(fn: Callable[[], Response]) -> Response:
    try:
        return fn()
    except Exception as raised:
        error = classify(raised)
        if error is None:
            request_id = (api.current_request.context or {}).get("requestId") if api.current_request else None
            logger.exception("unexpected error", extra={"request_id": request_id})
            message = "internal error; see the control plane's logs" + (
                f" (request {request_id})" if request_id else ""
            )
            return _error(500, {"code": "internal_error", "message": message})
        headers = {}
        if isinstance(error, (TransientError, RequestInProgressError, RateLimitedError)):
            # What a client should do: wait this long, then repeat the request (with the
            # same Idempotency-Key for a POST or DELETE).
            headers["Retry-After"] = str(error.retry_after_seconds)
        if isinstance(error, TransientError):
            logger.warning("request failed, retryable", extra={"error": error.code, "details": error.details})
        elif error.http_status >= 500:
            logger.exception("request failed")
        return _error(error.http_status, error.to_dict(), headers)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def _idempotent(principal: Principal, scope: str, body: Any, operation: Callable[[], dict[str, Any]]) -> Response:
    """Run a mutating operation once per Idempotency-Key; replays return the first response."""
    key = api.current_request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not key.strip():
        raise ValidationError("Idempotency-Key must not be empty", field="Idempotency-Key")
    result = once(
        wiring.deps().idempotency,
        key=key,
        scope=f"{principal.name}#{scope}",
        body=body,
        operation=operation,
        lambda_context=api.lambda_context,
    )
    return _json(result["status"], result["body"], result.get("headers"))


def _number(params: dict[str, str], name: str, kind: type[int] | type[float], required: bool = False) -> Any:
    """A numeric query parameter; a 400 naming it when it is missing (and required) or not a number."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise ValidationError(f"{name} is required", field=name)
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ValidationError(
            f"{name} must be {'a whole number' if kind is int else 'a number'}, not {raw!r}", field=name
        ) from None
    if not math.isfinite(value):  # nan, inf
        raise ValidationError(f"{name} must be a finite number", field=name)
    return value


def _owner() -> str | None:
    """`?owner=`: an admin's way to name another owner's cluster (names are per owner)."""
    return (api.current_request.query_params or {}).get("owner") or None


def _url(path: str) -> str:
    """An absolute path for `path` as the caller sees the API: behind API Gateway's default
    URL the stage (/api) precedes the route; behind a custom domain it may not."""
    request = api.current_request
    seen = (request.context or {}).get("path") or request.path
    prefix = seen[: -len(request.path)] if request.path and seen.endswith(request.path) else ""
    return f"{prefix}{path}"


def _accepted(body: dict[str, Any], path: str) -> dict[str, Any]:
    location = _url(path)
    return {"status": 202, "body": {**body, "status_url": location}, "headers": {"Location": location}}


MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def _audit(request: Any, response: Response) -> None:
    """Every mutating call in the audit trail: who (the caller's full ARN, once known), the
    route, the request id and how it ended (the error's code when it failed). ChatOps
    commands are recorded by the service, with the Slack user who sent them."""
    if request.path.startswith("/chatops/slack"):
        return
    try:
        deps = wiring.deps()
    except Exception:  # a broken deployment: the answer is already a 500, which says so
        logger.exception("audit entry not written: no control plane")
        return
    keys = current_keys()
    error = response.body.get("error") if isinstance(response.body, dict) else None
    outcome = error.get("code", "error") if isinstance(error, dict) else "ok"
    params = request.uri_params or {}
    audit.record(
        deps,
        f"{request.method} {(request.context or {}).get('resourcePath') or request.path}",
        outcome,
        who=str(keys.get("caller") or "unauthenticated"),
        owner=keys.get("owner"),
        cluster=params.get("name"),
        status=response.status_code,
        path=request.path,
        owner_param=(request.query_params or {}).get("owner"),
    )


@tracer.capture_method(capture_response=False)
def _route(handler: Callable[[], Response]) -> Response:
    request = api.current_request
    params = request.uri_params or {}
    bind(
        path=request.path,
        method=request.method,
        # API Gateway's id; locally (chalice's servers give none) one of our own, so that the
        # request's log lines and its audit entry still correlate.
        request_id=(request.context or {}).get("requestId") or f"local-{uuid.uuid4()}",
        cluster=params.get("name"),
        job_id=params.get("job_id"),
    )
    response = handle(handler)
    if request.method in MUTATING:
        _audit(request, response)
    metrics.add_metric(name=f"Http{response.status_code // 100}xx", unit="Count", value=1)
    metrics.flush_metrics()
    return response


# users ---------------------------------------------------------------------------------
@api.route("/users", methods=["POST"], authorizer=iam)
def create_user() -> Response:
    def run() -> Response:
        principal = _principal()
        body = _body()
        spec = _model(UserSpec, body)

        def operation() -> dict[str, Any]:
            existed = wiring.deps().store.get_user(spec.name) is not None
            user = users.create_user(wiring.deps(), principal, spec)
            return {"status": 200 if existed else 201, "body": user.model_dump(mode="json")}

        return _idempotent(principal, "POST /users", body, operation)

    return _route(run)


@api.route("/users", methods=["GET"], authorizer=iam)
def list_users() -> Response:
    return _route(
        lambda: _json(
            200, {"users": [u.model_dump(mode="json") for u in users.list_users(wiring.deps(), _principal())]}
        )
    )


@api.route("/users/{name}", methods=["GET"], authorizer=iam)
def get_user(name: str) -> Response:
    return _route(lambda: _json(200, users.get_user(wiring.deps(), _principal(), name).model_dump(mode="json")))


# clusters ------------------------------------------------------------------------------
@api.route("/clusters", methods=["POST"], authorizer=iam)
def launch_cluster() -> Response:
    def run() -> Response:
        principal = _principal()
        body = _body()
        spec = _model(ClusterSpec, body)

        def operation() -> dict[str, Any]:
            cluster = clusters.launch_cluster(wiring.deps(), principal, spec)
            return _accepted({"cluster": cluster.public()}, clusters.cluster_path(cluster, principal))

        return _idempotent(principal, "POST /clusters", body, operation)

    return _route(run)


@api.route("/clusters", methods=["GET"], authorizer=iam)
def list_clusters() -> Response:
    return _route(
        lambda: _json(200, {"clusters": [c.public() for c in clusters.list_clusters(wiring.deps(), _principal())]})
    )


@api.route("/clusters/{name}", methods=["GET"], authorizer=iam)
def get_cluster(name: str) -> Response:
    return _route(lambda: _json(200, costs.cluster_view(wiring.deps(), _principal(), name, _owner())))


@api.route("/clusters/{name}/cost", methods=["GET"], authorizer=iam)
def get_cluster_cost(name: str) -> Response:
    return _route(lambda: _json(200, costs.cluster_cost(wiring.deps(), _principal(), name, _owner())))


@api.route("/clusters/{name}/cost/history", methods=["GET"], authorizer=iam)
def get_cluster_cost_history(name: str) -> Response:
    return _route(lambda: _json(200, costs.cost_history(wiring.deps(), _principal(), name, _owner())))


@api.route("/quote", methods=["GET"], authorizer=iam)
def get_quote() -> Response:
    def run() -> Response:
        params = api.current_request.query_params or {}
        if not params.get("preset") and not params.get("spec"):
            raise ValidationError(
                "name a preset (GET /presets lists them) or give a cluster spec: ?preset=small&hours=8", field="preset"
            )
        spec = None
        if params.get("spec"):
            try:
                spec = json.loads(params["spec"])
            except ValueError as error:
                raise ValidationError(f"spec is not valid JSON: {error}", field="spec") from None
            if not isinstance(spec, dict):
                raise ValidationError("spec must be a JSON object (POST /clusters' body)", field="spec")
        return _json(
            200,
            quotes.quote(
                wiring.deps(),
                _principal(),
                preset=params.get("preset") or None,
                spec=spec,
                hours=_number(params, "hours", float, required=True),
                nodes=_number(params, "nodes", int),
                budget_usd=_number(params, "budget_usd", float),
            ),
        )

    return _route(run)


@api.route("/presets", methods=["GET"], authorizer=iam)
def get_presets() -> Response:
    return _route(lambda: _json(200, costs.list_presets(wiring.deps(), _principal())))


@api.route("/costs", methods=["GET"], authorizer=iam)
def get_costs() -> Response:
    return _route(lambda: _json(200, costs.costs_by_owner(wiring.deps(), _principal())))


def _time(params: dict[str, str], name: str) -> datetime | None:
    """An ISO 8601 time query parameter (with its offset, or Z); a 400 naming it otherwise."""
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = from_iso(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ValidationError(f"{name} must be an ISO 8601 time with its offset, e.g. 2026-12-06T04:00:00Z", field=name)
    return value


@api.route("/audit", methods=["GET"], authorizer=iam)
def get_audit() -> Response:
    def run() -> Response:
        principal = _principal()
        params = dict(api.current_request.query_params or {})
        unknown = sorted(set(params) - {"since", "until", "limit", "next", *audit.FILTERS})
        if unknown:
            raise ValidationError(f"unknown query parameter {unknown[0]}", field=unknown[0])
        found = audit.query(
            wiring.deps(),
            principal,
            since=_time(params, "since"),
            until=_time(params, "until"),
            limit=100 if (limit := _number(params, "limit", int)) is None else limit,
            token=params.get("next"),
            **{key: params.get(key) for key in audit.FILTERS},
        )
        return _json(200, found)

    return _route(run)


@api.route("/clusters/{name}", methods=["DELETE"], authorizer=iam)
def delete_cluster(name: str) -> Response:
    def run() -> Response:
        principal = _principal()
        owner = _owner()

        def operation() -> dict[str, Any]:
            cluster = clusters.delete_cluster(wiring.deps(), principal, name, owner)
            return _accepted({"cluster": cluster.public()}, clusters.cluster_path(cluster, principal))

        return _idempotent(principal, f"DELETE /clusters/{name}?owner={owner or principal.name}", {}, operation)

    return _route(run)


@api.route("/clusters/{name}", methods=["PATCH"], authorizer=iam)
def change_cluster(name: str) -> Response:
    def run() -> Response:
        principal = _principal()
        owner = _owner()
        body = _body()
        change = _model(ClusterChange, body)

        def operation() -> dict[str, Any]:
            cluster = clusters.change_cluster(wiring.deps(), principal, name, change, owner)
            return {"status": 200, "body": {"cluster": cluster.public()}}

        return _idempotent(principal, f"PATCH /clusters/{name}?owner={owner or principal.name}", body, operation)

    return _route(run)


# jobs ----------------------------------------------------------------------------------
@api.route("/clusters/{name}/jobs", methods=["POST"], authorizer=iam)
def submit_job(name: str) -> Response:
    def run() -> Response:
        principal = _principal()
        owner = _owner()
        body = _body()
        spec = _model(JobSpec, body)

        def operation() -> dict[str, Any]:
            key = api.current_request.headers.get(IDEMPOTENCY_HEADER)
            job = jobs.submit_job(wiring.deps(), principal, name, spec, request_key=key, owner=owner)
            path = f"/clusters/{name}/jobs/{job.job_id}"
            return _accepted(
                {"job": job.model_dump(mode="json")},
                path if job.owner == principal.name else f"{path}?owner={job.owner}",
            )

        return _idempotent(principal, f"POST /clusters/{name}/jobs?owner={owner or principal.name}", body, operation)

    return _route(run)


@api.route("/clusters/{name}/jobs", methods=["GET"], authorizer=iam)
def list_jobs(name: str) -> Response:
    return _route(lambda: _json(200, jobs.list_jobs_with_costs(wiring.deps(), _principal(), name, _owner())))


@api.route("/clusters/{name}/jobs/{job_id}", methods=["GET"], authorizer=iam)
def get_job(name: str, job_id: str) -> Response:
    return _route(
        lambda: _json(200, jobs.view_job(wiring.deps(), _principal(), name, job_id, _owner()).model_dump(mode="json"))
    )


@api.route("/clusters/{name}/jobs/{job_id}/log", methods=["GET"], authorizer=iam)
def job_log(name: str, job_id: str) -> Response:
    def run() -> Response:
        lines = _number(api.current_request.query_params or {}, "tail", int)
        lines = 100 if lines is None else lines
        return _json(200, jobs.job_log(wiring.deps(), _principal(), name, job_id, lines, _owner()))

    return _route(run)


@api.route("/clusters/{name}/jobs/{job_id}", methods=["DELETE"], authorizer=iam)
def cancel_job(name: str, job_id: str) -> Response:
    """Cancel a job (scancel; a bps workflow's pilots too). Idempotent: a job already over is
    returned as it is (200); one being cancelled is 202, and its record ends `cancelled`."""

    def run() -> Response:
        principal = _principal()
        owner = _owner()

        def operation() -> dict[str, Any]:
            job = jobs.cancel_job(wiring.deps(), principal, name, job_id, owner)
            body = {"job": job.model_dump(mode="json")}
            if job.state.terminal:
                return {"status": 200, "body": body}
            path = f"/clusters/{name}/jobs/{job.job_id}"
            return _accepted(body, path if job.owner == principal.name else f"{path}?owner={job.owner}")

        return _idempotent(
            principal, f"DELETE /clusters/{name}/jobs/{job_id}?owner={owner or principal.name}", {}, operation
        )

    return _route(run)


# principals (admins) -------------------------------------------------------------------
@api.route("/principals", methods=["POST"], authorizer=iam)
def register_principal() -> Response:
    def run() -> Response:
        principal = _principal()
        body = _body()
        spec = _model(RegistrationSpec, body)

        def operation() -> dict[str, Any]:
            registration, created = identity_module.register_role(wiring.deps(), principal, spec)
            return {"status": 201 if created else 200, "body": registration.model_dump(mode="json")}

        return _idempotent(principal, "POST /principals", body, operation)

    return _route(run)


@api.route("/principals", methods=["GET"], authorizer=iam)
def list_principals() -> Response:
    return _route(
        lambda: _json(
            200,
            {
                "principals": [
                    r.model_dump(mode="json") for r in identity_module.list_registrations(wiring.deps(), _principal())
                ]
            },
        )
    )


@api.route("/principals", methods=["DELETE"], authorizer=iam)
def remove_principal() -> Response:
    def run() -> Response:
        principal = _principal()
        arn = (api.current_request.query_params or {}).get("arn")
        if not arn:
            raise ValidationError("give the principal's ARN: DELETE /principals?arn=...", field="arn")

        def operation() -> dict[str, Any]:
            removed = identity_module.remove_registration(wiring.deps(), principal, arn)
            return {"status": 200, "body": removed.model_dump(mode="json")}

        return _idempotent(principal, f"DELETE /principals?arn={arn}", {}, operation)

    return _route(run)


# quotas --------------------------------------------------------------------------------
@api.route("/quotas/{owner}", methods=["GET"], authorizer=iam)
def get_quota(owner: str) -> Response:
    return _route(lambda: _json(200, quotas.get_quota(wiring.deps(), _principal(), owner)))


@api.route("/quotas/{owner}", methods=["PUT"], authorizer=iam)
def set_quota(owner: str) -> Response:
    def run() -> Response:
        principal = _principal()
        spec = _model(QuotaSpec, _body())
        return _json(200, quotas.set_quota(wiring.deps(), principal, owner, spec))

    return _route(run)


# projects (grants) ---------------------------------------------------------------------
@api.route("/projects", methods=["GET"], authorizer=iam)
def list_projects() -> Response:
    return _route(lambda: _json(200, quotas.list_projects(wiring.deps(), _principal())))


@api.route("/projects/{name}", methods=["GET"], authorizer=iam)
def get_project(name: str) -> Response:
    return _route(lambda: _json(200, quotas.get_project(wiring.deps(), _principal(), name)))


@api.route("/projects/{name}", methods=["PUT"], authorizer=iam)
def set_project(name: str) -> Response:
    def run() -> Response:
        principal = _principal()
        spec = _model(ProjectSpec, _body())
        return _json(200, quotas.set_project(wiring.deps(), principal, name, spec))

    return _route(run)


# ChatOps -------------------------------------------------------------------------------
@api.route("/chatops/slack", methods=["POST"], content_types=["application/x-www-form-urlencoded"])
def slack_command() -> Response:
    """Slack's slash command: no SigV4 (Slack cannot sign for AWS) but Slack's own signature
    over the raw body, checked first; anything unsigned gets 401 and causes nothing. The
    answer is always a message Slack shows: usage lines, refusals and failures included."""

    def run() -> Response:
        request = api.current_request
        raw = request.raw_body.decode() if isinstance(request.raw_body, bytes) else (request.raw_body or "")
        return _json(200, chatops.slash_command(wiring.deps(), raw, dict(request.headers)))

    return _route(run)


@api.route("/chatops/identities", methods=["PUT"], authorizer=iam)
def link_chat_identity() -> Response:
    def run() -> Response:
        principal = _principal()
        spec = _model(ChatIdentitySpec, _body())
        return _json(200, chatops.link_identity(wiring.deps(), principal, spec).model_dump(mode="json"))

    return _route(run)


@api.route("/chatops/identities", methods=["GET"], authorizer=iam)
def list_chat_identities() -> Response:
    return _route(
        lambda: _json(
            200,
            {"identities": [i.model_dump(mode="json") for i in chatops.list_identities(wiring.deps(), _principal())]},
        )
    )


@api.route("/chatops/identities", methods=["DELETE"], authorizer=iam)
def unlink_chat_identity() -> Response:
    def run() -> Response:
        principal = _principal()
        params = api.current_request.query_params or {}
        for field in ("team_id", "user_id"):
            if not params.get(field):
                raise ValidationError(
                    f"give {field}: DELETE /chatops/identities?team_id=T...&user_id=U...", field=field
                )
        chatops.unlink_identity(wiring.deps(), principal, params["team_id"], params["user_id"])
        return _json(200, {"team_id": params["team_id"], "user_id": params["user_id"], "linked": False})

    return _route(run)


@api.route("/chatops/channel", methods=["PUT"], authorizer=iam)
def set_chat_channel() -> Response:
    def run() -> Response:
        principal = _principal()
        spec = _model(ChannelSpec, _body())
        return _json(200, chatops.set_channel(wiring.deps(), principal, spec))

    return _route(run)
