"""`lsstctl`: the researcher's command line. It talks to the HTTP API only (lsstctl.cli.client).

Every command takes `--json` (the API's answer, as is, on stdout; errors too, as
{"error": {...}}) and exits with a code scripts can rely on (client.py). Waiting commands
(`up --wait`, `down --wait`, `run --wait`, `logs --follow`) show live progress and stop on
Ctrl-C without cancelling anything on the server.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote as q

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lsstctl.cli import charts
from lsstctl.cli.client import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    ApiError,
    Client,
    CliError,
    Settings,
    write_config,
)

F = TypeVar("F", bound=Callable[..., Any])
JSON_FLAG = "lsstctl.json"

ENDED_JOB = {"completed", "failed", "cancelled", "timeout", "node_fail", "out_of_memory"}
# What each lifecycle state is doing, for progress lines.
STEPS = {
    "requested": "queued: the launch workflow is starting",
    "launching": "creating the cluster (ParallelCluster: head node, storage, queues)",
    "installing": "installing the LSST stack on the shared storage",
    "ready": "ready for jobs",
    "tearing_down": "tearing down: stopping jobs, archiving results to S3, deleting",
    "deleted": "deleted; results archived",
    "failed": "failed",
}

# Piped output is not cut to 80 columns (tables keep whole ids).
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class Ctx:
    def __init__(self, endpoint: str | None, principal: str | None, profile: str | None, region: str | None):
        self._options = (endpoint, principal, profile, region)
        self._client: Client | None = None

    @property
    def json(self) -> bool:
        """`--json` given, before or after the command's name."""
        return bool(click.get_current_context().meta.get(JSON_FLAG))

    @property
    def api(self) -> Client:
        if self._client is None:
            self._client = Client(Settings.resolve(*self._options))
        return self._client


def json_option(command: F) -> F:
    """`--json` on every command: the API's answer as JSON on stdout, nothing else."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[JSON_FLAG] = True  # meta is shared by the group's and the command's contexts
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=remember,
        is_eager=True,
        help="Print the API's answer as JSON (for scripts).",
    )(command)


def emit(ctx: Ctx, data: Any, human: Callable[[], None]) -> None:
    if ctx.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        human()


def fail(message: str, code: int, body: dict[str, Any] | None = None) -> NoReturn:
    raise CliError(message, code, body)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--endpoint", envvar="LSSTCTL_ENDPOINT", help="The API's URL (make deploy prints it).")
@click.option("--as", "principal", envvar="LSSTCTL_PRINCIPAL", help="Local control plane only: who you are.")
@click.option("--profile", help="AWS profile to sign requests with (default: the usual chain).")
@click.option("--region", help="AWS region of the API (default: from the endpoint).")
@click.version_option(package_name="lsstctl")
@json_option
@click.pass_context
def cli(
    ctx: click.Context, endpoint: str | None, principal: str | None, profile: str | None, region: str | None
) -> None:
    """Rubin Science Pipelines clusters in your AWS account, with spend kept bounded."""
    ctx.obj = Ctx(endpoint, principal, profile, region)


# setup -------------------------------------------------------------------------------------


@cli.command()
@click.option("--endpoint", "endpoint_", help="The API's URL.")
@click.option("--as", "principal_", help="Local control plane only: who you are.")
@click.option("--profile", "profile_", help="AWS profile to sign with.")
@click.option("--region", "region_", help="AWS region of the API.")
@json_option
@click.pass_obj
def configure(
    ctx: Ctx, endpoint_: str | None, principal_: str | None, profile_: str | None, region_: str | None
) -> None:
    """Remember the endpoint (and who you are, locally) in the config file."""
    values = {
        "endpoint": endpoint_ or "",
        "principal": principal_ or "",
        "profile": profile_ or "",
        "region": region_ or "",
    }
    if not any(values.values()):
        fail("usage: lsstctl configure --endpoint URL [--as NAME] [--profile P] [--region R]", 2)
    path = write_config(values)
    emit(ctx, {"config": str(path)}, lambda: out.print(f"saved {path}"))


@cli.group()
def users() -> None:
    """Control-plane users (IAM users with least privilege; keys in Secrets Manager)."""


@users.command("create")
@click.argument("name")
@json_option
@click.pass_obj
def users_create(ctx: Ctx, name: str) -> None:
    """Create user NAME (admins; or yourself)."""
    user = ctx.api.request("POST", "/users", {"name": name})
    emit(
        ctx,
        user,
        lambda: out.print(
            f"created [bold]{user['name']}[/]: IAM user {user['iam_user_name']}, access key in Secrets Manager "
            f"({user['secret_arn']})"
        ),
    )


@users.command("list")
@json_option
@click.pass_obj
def users_list(ctx: Ctx) -> None:
    """The users you may see."""
    answer = ctx.api.request("GET", "/users")

    def show() -> None:
        table = Table("NAME", "OWNER", "IAM USER", "CREATED")
        for u in answer["users"]:
            table.add_row(u["name"], u["owner"], u["iam_user_name"], u["created_at"])
        out.print(table)

    emit(ctx, answer, show)


@cli.command()
@json_option
@click.pass_obj
def presets(ctx: Ctx) -> None:
    """The named cluster sizes, with their hourly prices."""
    answer = ctx.api.request("GET", "/presets")

    def show() -> None:
        table = Table("PRESET", "AT REST $/h", "FULL SIZE $/h", "WHAT IT IS FOR")
        for p in answer["presets"]:
            table.add_row(
                p["name"], f"{p['at_rest_usd_per_hour']:.3f}", f"{p['full_size_usd_per_hour']:.2f}", p["description"]
            )
        out.print(table)
        out.print(f"prices as of {answer['prices_as_of']} ({answer['region']})")

    emit(ctx, answer, show)


@cli.command()
@click.argument("words", nargs=-1, metavar="[PRESET] HOURS")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Quote a JSON or YAML cluster spec (as for `up --spec`) instead of a preset.",
)
@click.option("--nodes", type=int, help="Compute nodes in use (default: every queue full).")
@click.option("--budget", type=float, help="Would this budget be admitted (or capped), and why?")
@json_option
@click.pass_obj
def quote(ctx: Ctx, words: tuple[str, ...], spec_file: Path | None, nodes: int | None, budget: float | None) -> None:
    """What PRESET (or --spec FILE) costs for HOURS, before launching it."""
    if len(words) != (1 if spec_file else 2):
        fail("usage: lsstctl quote PRESET HOURS [--nodes N] [--budget USD]  |  lsstctl quote --spec FILE HOURS", 2)
    try:
        hours = float(words[-1])
    except ValueError:
        fail(f"usage: HOURS is a number of hours, not {words[-1]!r}", 2)
    query: dict[str, Any] = {"hours": hours, "nodes": nodes, "budget_usd": budget}
    if spec_file:
        query["spec"] = json.dumps(_load(spec_file))
    else:
        query["preset"] = words[0]
    answer = ctx.api.request("GET", "/quote", query=query)

    def show() -> None:
        out.print(
            f"[bold]{answer['preset'] or 'your spec'}[/] in {answer['region']} (prices as of {answer['prices_as_of']}, "
            f"{answer['pricing']}):"
        )
        out.print(f"  at rest      ${answer['at_rest_usd_per_hour']:.4f}/h (head node and shared storage)")
        out.print(f"  full size    ${answer['full_size_usd_per_hour']:.4f}/h ({answer['max_nodes']} nodes)")
        out.print(f"  {answer['nodes']:>3} nodes    ${answer['in_use_usd_per_hour']:.4f}/h")
        out.print(
            f"  [bold]{answer['hours']:g} hour{'' if answer['hours'] == 1 else 's'}    {usd(answer['run_usd'])}[/]"
        )
        verdict = answer.get("budget")
        if verdict:
            word = "refused" if not verdict["admitted"] else ("launched capped" if verdict["capped"] else "admitted")
            out.print(
                f"  budget {usd(verdict['budget_usd'])}: [bold]{word}[/]"
                + (f": {verdict['reason']}" if verdict.get("reason") else "")
                + ("" if verdict["covers_run"] else "; it does not cover this run")
                + (
                    f"; lasts {verdict['hours_at_this_size']:g} h at this size"
                    if verdict.get("hours_at_this_size") is not None
                    else ""
                )
            )

    emit(ctx, answer, show)


# clusters ----------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--preset", help="A named size (lsstctl presets; default small, or none with --spec).")
@click.option("--budget", type=float, help="USD: the cluster is torn down before spending more.")
@click.option("--idle", type=int, help="Minutes without jobs before teardown (default 60).")
@click.option("--lifetime", type=float, help="Hours before teardown, busy or not (default 24).")
@click.option("--stack", help="lsst_distrib tag to install (e.g. w_2026_47, v30_0_7).")
@click.option("--project", help="A project (grant) whose budget this counts against.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON or YAML cluster spec (POST /clusters); the options above override it.",
)
@click.option("--wait", is_flag=True, help="Follow the launch until the cluster is ready.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait at most.")
@json_option
@click.pass_obj
def up(
    ctx: Ctx,
    name: str,
    preset: str | None,
    budget: float | None,
    idle: int | None,
    lifetime: float | None,
    stack: str | None,
    project: str | None,
    spec_file: Path | None,
    wait: bool,
    timeout: float,
) -> None:
    """Launch cluster NAME (a preset, a budget, limits), and optionally wait until it is ready."""
    spec: dict[str, Any] = _load(spec_file) if spec_file else {}
    if preset or not spec_file:  # a spec file of its own takes no preset unless one is asked for
        spec["preset"] = preset or "small"
    options = {
        "name": name,
        "budget_usd": budget,
        "idle_minutes": idle,
        "max_lifetime_hours": lifetime,
        "stack_tag": stack,
        "project": project,
    }
    spec.update({k: v for k, v in options.items() if v is not None})
    if "budget_usd" not in spec:
        fail("usage: lsstctl up NAME --budget USD [--preset small] (see `lsstctl quote`)", 2)
    accepted = ctx.api.request("POST", "/clusters", spec)
    if not wait:
        emit(
            ctx,
            accepted,
            lambda: out.print(
                f"launching [bold]{name}[/] ({accepted['cluster']['state']}); follow it with: lsstctl status {name}"
                + (f"\n{accepted['cluster']['governor']['message']}" if accepted["cluster"].get("governor") else "")
            ),
        )
        return
    final = _follow(ctx, name, {"ready"}, {"failed", "deleted", "tearing_down"}, timeout)
    emit(ctx, final, lambda: out.print(f"[bold]{name}[/] is ready: lsstctl run {name} -- COMMAND"))


@cli.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Follow the teardown until the cluster is deleted.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait at most.")
@json_option
@click.pass_obj
def down(ctx: Ctx, name: str, wait: bool, timeout: float) -> None:
    """Tear cluster NAME down (its results are archived first)."""
    accepted = ctx.api.request("DELETE", f"/clusters/{q(name)}")
    if not wait:
        emit(
            ctx,
            accepted,
            lambda: out.print(
                f"tearing [bold]{name}[/] down ({accepted['cluster']['state']}); follow it with: lsstctl status {name}"
            ),
        )
        return
    final = _follow(ctx, name, {"deleted"}, {"failed"}, timeout)
    emit(
        ctx,
        final,
        lambda: out.print(
            f"[bold]{name}[/] is deleted; spent {usd(final['cost']['spend_usd'])}; results in {final.get('archive_uri')}"
        ),
    )


@cli.command()
@click.argument("name", required=False)
@json_option
@click.pass_obj
def status(ctx: Ctx, name: str | None) -> None:
    """Your clusters, or one cluster in detail."""
    if name is None:
        answer = ctx.api.request("GET", "/clusters")

        def table() -> None:
            rows = Table("NAME", "STATE", "GEN", "NODES (MAX)", "BUDGET", "STACK", "CREATED")
            for c in answer["clusters"]:
                spec = c["spec"]
                rows.add_row(
                    c["name"],
                    c["state"],
                    str(c["generation"]),
                    str(sum(x["max_nodes"] for x in spec["queues"])),
                    f"${spec['budget_usd']:,.2f}",
                    spec["stack_tag"],
                    c["created_at"],
                )
            out.print(rows)

        emit(ctx, answer, table)
        return
    view = ctx.api.request("GET", f"/clusters/{q(name)}")
    emit(ctx, view, lambda: _show_cluster(view))


def _show_cluster(view: dict[str, Any]) -> None:
    spec, cost = view["spec"], view["cost"]
    out.print(
        f"[bold]{view['name']}[/] ({view['owner']}, generation {view['generation']}): "
        f"[bold]{view['state']}[/] - {STEPS.get(view['state'], '')}"
    )
    burning = cost.get("burn_usd_per_hour") is not None and view["state"] not in ("deleted", "failed")
    out.print(
        f"  spend {usd(cost['spend_usd'])} of {usd(spec['budget_usd'])}"
        + (f", burning {usd(cost['burn_usd_per_hour'])}/h" if burning else "")
    )
    out.print(
        f"  stack {spec['stack_tag']}, idle after {spec['idle_minutes']} min, lifetime {spec['max_lifetime_hours']} h"
    )
    for queue in spec["queues"]:
        out.print(
            f"  queue {queue['name']}: {','.join(queue['instance_types'])} x {queue['min_nodes']}-"
            f"{queue['max_nodes']} ({queue.get('capacity_type', 'ondemand')})"
        )
    if view.get("governor"):
        out.print(f"  governor: {view['governor'].get('message')}")
    if view.get("failure"):
        out.print(f"  failure: {view['failure']}")
    if view.get("archive_uri"):
        out.print(f"  results: {view['archive_uri']}")
    for t in view["history"]:
        out.print(f"  {t['at']}  {t['state']:<13} {t['reason']}")


def _follow(ctx: Ctx, name: str, wanted: set[str], stop: set[str], timeout: float) -> dict[str, Any]:
    """Poll the cluster until a wanted state: live progress (state, elapsed, step, spend) on a
    terminal, a line per change otherwise. Ctrl-C stops watching, never the server's work."""
    started = time.monotonic()
    seen: tuple[str, str] | None = None
    with err.status("", spinner="dots") if err.is_terminal else nullcontext() as status:
        try:
            while True:
                try:
                    view = ctx.api.request("GET", f"/clusters/{q(name)}")
                except ApiError as error:
                    if error.status == 404 and "deleted" in wanted and seen is not None:
                        return {"name": name, "state": "deleted", "cost": {"spend_usd": 0.0}}
                    raise
                state = view["state"]
                last = view["history"][-1]["reason"] if view.get("history") else ""
                elapsed = time.monotonic() - started
                spend = (view.get("cost") or {}).get("spend_usd") or 0.0
                line = (
                    f"{name}  {state:<12} {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}  "
                    f"{STEPS.get(state, state)}  {usd(spend)} of {usd(view['spec']['budget_usd'])}"
                )
                if status is not None:
                    status.update(line)
                if (state, last) != seen:  # progress goes to stderr: stdout stays the answer
                    err.print(f"{line}  ({last})", markup=False)
                seen = (state, last)
                if state in wanted:
                    return dict(view)
                if state in stop:
                    failure = view.get("failure") or {}
                    fail(
                        f"{name} is {state}: {failure.get('message') or view.get('teardown_reason') or last}",
                        EXIT_FAILED,
                        body={"error": {"code": f"cluster_{state}", "message": last}, "cluster": view},
                    )
                if elapsed > timeout:
                    fail(
                        f"gave up waiting after {timeout:g}s: {name} is {state}; it goes on (lsstctl status {name})",
                        EXIT_TIMEOUT,
                    )
                time.sleep(_poll_seconds())
        except KeyboardInterrupt:
            err.print(f"\nstopped watching; {name} goes on ({seen[0] if seen else 'unknown'}): lsstctl status {name}")
            raise SystemExit(EXIT_INTERRUPTED) from None


def usd(amount: float | None) -> str:
    """Dollars as people read them: cents, or tenths of a cent under a dollar."""
    value = float(amount or 0.0)
    return f"${value:,.2f}" if value >= 1 or round(value, 2) == value else f"${value:.4f}"


def _poll_seconds() -> float:
    return float(os.environ.get("LSSTCTL_POLL_SECONDS", "2"))


# jobs --------------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--pipetask", is_flag=True, help="Run `pipetask run` (with --butler, --pipeline ...).")
@click.option("--butler", help="pipetask: the Butler repository (e.g. /shared/demo/repo).")
@click.option("--pipeline", help="pipetask: the pipeline YAML (with #subset if any).")
@click.option("--input", "inputs", multiple=True, help="pipetask: an input collection (repeatable).")
@click.option("--output", help="pipetask: the output collection.")
@click.option("-d", "--data-query", help="pipetask: the data query.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON or YAML job spec (POST /clusters/NAME/jobs), e.g. a bps submission.",
)
@click.option("--job-name", help="The job's name.")
@click.option("--queue", help="The Slurm partition (a queue of the cluster).")
@click.option("--nodes", type=int, help="Nodes.")
@click.option("--cores", type=int, help="CPUs per task.")
@click.option("--memory", "memory_mb", type=int, help="MiB per node.")
@click.option("--walltime", type=int, help="Minutes.")
@click.option("--wait", is_flag=True, help="Follow the job until it ends (exit 7 unless it completed).")
@json_option
@click.pass_obj
def run(
    ctx: Ctx,
    name: str,
    command: tuple[str, ...],
    pipetask: bool,
    butler: str | None,
    pipeline: str | None,
    inputs: tuple[str, ...],
    output: str | None,
    data_query: str | None,
    spec_file: Path | None,
    job_name: str | None,
    queue: str | None,
    nodes: int | None,
    cores: int | None,
    memory_mb: int | None,
    walltime: int | None,
    wait: bool,
) -> None:
    """Run a job on cluster NAME: `run NAME -- COMMAND...` (joined as ssh does, run by bash on the
    cluster), or `run NAME --pipetask --butler REPO --pipeline P --input C --output O [-- ARGS]`."""
    spec: dict[str, Any] = _load(spec_file) if spec_file else {}
    if pipetask:
        task = {
            "butler": butler,
            "pipeline": pipeline,
            "inputs": list(inputs) or None,
            "output": output,
            "data_query": data_query,
            "extra_args": list(command) or None,
        }
        spec["pipetask"] = {k: v for k, v in task.items() if v is not None}
    elif command:
        spec["command"] = " ".join(command)
    elif not spec:
        fail(
            "usage: lsstctl run NAME -- COMMAND...  |  lsstctl run NAME --pipetask --butler REPO --pipeline P "
            "[--input C] [--output O]  |  lsstctl run NAME --spec job.yaml",
            2,
        )
    options = {
        "name": job_name,
        "queue": queue,
        "nodes": nodes,
        "cores": cores,
        "memory_mb": memory_mb,
        "walltime_minutes": walltime,
    }
    spec.update({k: v for k, v in options.items() if v is not None})
    accepted = ctx.api.request("POST", f"/clusters/{q(name)}/jobs", spec)
    job = accepted["job"]
    if not wait:
        emit(
            ctx,
            accepted,
            lambda: out.print(
                f"job [bold]{job['job_id']}[/] submitted to {name}; lsstctl logs {name} {job['job_id']} --follow"
            ),
        )
        return
    final = _follow_job(ctx, name, job["job_id"], print_log=not ctx.json)
    emit(ctx, final, lambda: _job_line(final))
    if final["state"] != "completed":
        raise SystemExit(EXIT_FAILED)


@cli.command()
@click.argument("name")
@json_option
@click.pass_obj
def jobs(ctx: Ctx, name: str) -> None:
    """The jobs of cluster NAME, with what each cost."""
    answer = ctx.api.request("GET", f"/clusters/{q(name)}/jobs")

    def show() -> None:
        table = Table("JOB", "NAME", "KIND", "STATE", "SLURM", "NODES", "QUANTA", "COST", "STARTED")
        for j in answer["jobs"]:
            spec, quanta = j["spec"], j.get("quanta") or {}
            kind = "pipetask" if spec.get("pipetask") else "bps" if spec.get("bps") else "command"
            table.add_row(
                j["job_id"],
                spec.get("name") or "",
                kind,
                j["state"],
                j.get("slurm_job_id") or "",
                str(j.get("node_count") or ""),
                f"{quanta.get('succeeded')}/{quanta.get('expected')}" if quanta else "",
                f"${j['cost_usd']:.4f}" if j.get("cost_usd") is not None else "",
                j.get("started_at") or "",
            )
        out.print(table)
        cost = answer.get("cost") or {}
        if cost:
            out.print(
                f"spend {usd(cost.get('spend_usd'))}: jobs {usd(cost.get('jobs_usd'))}, "
                f"idle {usd(cost.get('idle_usd'))}"
            )

    emit(ctx, answer, show)


@cli.command()
@click.argument("name")
@click.argument("job_id")
@click.option("--tail", type=int, default=100, show_default=True, help="Lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@json_option
@click.pass_obj
def logs(ctx: Ctx, name: str, job_id: str, tail: int, follow: bool) -> None:
    """The log of job JOB_ID on cluster NAME (Slurm's stdout and stderr)."""
    if follow and not ctx.json:
        final = _follow_job(ctx, name, job_id, print_log=True, tail=tail)
        _job_line(final, stream=err)
        return
    answer = ctx.api.request("GET", f"/clusters/{q(name)}/jobs/{q(job_id)}/log", query={"tail": tail})

    def show() -> None:
        for line in answer["lines"]:
            click.echo(line)
        if answer.get("detail"):
            err.print(answer["detail"])

    emit(ctx, answer, show)


def _follow_job(ctx: Ctx, name: str, job_id: str, *, print_log: bool, tail: int = 200) -> dict[str, Any]:
    path = f"/clusters/{q(name)}/jobs/{q(job_id)}"
    printed: list[str] = []
    try:
        while True:
            job = ctx.api.request("GET", path)
            if print_log:
                lines = ctx.api.request("GET", f"{path}/log", query={"tail": tail})["lines"]
                fresh = _new_lines(printed, lines)
                for line in fresh:
                    click.echo(line)
                printed = (printed + fresh)[-tail:]
            if job["state"] in ENDED_JOB:
                return dict(job)
            time.sleep(_poll_seconds())
    except KeyboardInterrupt:
        err.print(f"\nstopped following; job {job_id} goes on: lsstctl jobs {name}")
        raise SystemExit(EXIT_INTERRUPTED) from None


def _new_lines(printed: list[str], lines: list[str]) -> list[str]:
    """The lines of a new tail not printed yet: after the longest end of what was printed that
    the tail starts with (a log only grows)."""
    for k in range(min(len(printed), len(lines)), 0, -1):
        if printed[-k:] == lines[:k]:
            return lines[k:]
    return lines


def _job_line(job: dict[str, Any], stream: Console = out) -> None:
    quanta = job.get("quanta") or {}
    stream.print(
        f"job [bold]{job['job_id']}[/] {job['state']}"
        + (f" (exit {job['exit_code']})" if job.get("exit_code") else "")
        + (f", quanta {quanta.get('succeeded')}/{quanta.get('expected')}" if quanta else "")
        + (f", ${job['cost_usd']:.4f}" if job.get("cost_usd") is not None else "")
        + (f": {job['reason']}" if job.get("reason") and job["state"] != "completed" else "")
    )


@cli.command()
@click.argument("name")
@click.argument("job_id")
@json_option
@click.pass_obj
def cancel(ctx: Ctx, name: str, job_id: str) -> None:
    """Cancel job JOB_ID on cluster NAME (a bps workflow's pilot jobs too)."""
    job = ctx.api.request("DELETE", f"/clusters/{q(name)}/jobs/{q(job_id)}")
    state = job["job"]["state"]
    emit(
        ctx,
        job,
        lambda: out.print(
            f"job [bold]{job_id}[/]: {state}"
            if state in ENDED_JOB
            else f"job [bold]{job_id}[/]: cancel requested (it was {state})"
        ),
    )


# cost --------------------------------------------------------------------------------------


@cli.command()
@click.argument("name", required=False)
@click.option("--plot", is_flag=True, help="Draw spend against the budget, and the burn rate, over time.")
@click.option("--png", "png", type=click.Path(dir_okay=False, path_type=Path), help="Write that chart as a PNG.")
@json_option
@click.pass_obj
def cost(ctx: Ctx, name: str | None, plot: bool, png: Path | None) -> None:
    """What cluster NAME has cost (or every cluster of yours, with totals)."""
    if name is None:
        if plot or png:
            fail("usage: lsstctl cost NAME --plot | --png FILE (a chart is of one cluster)", 2)
        answer = ctx.api.request("GET", "/costs")
        emit(ctx, answer, lambda: _show_costs(answer))
        return
    if plot or png:
        history = ctx.api.request("GET", f"/clusters/{q(name)}/cost/history")
        if png:
            charts.png_chart(history, png)
        if ctx.json:
            emit(ctx, {**history, "png": str(png) if png else None}, lambda: None)
            return
        if not history["points"]:
            err.print(f"{name}: the guard has not measured it yet (it does every minute)")
        elif plot:
            click.echo(charts.terminal_chart(history, width=min(out.width, 120)))
        if png:
            out.print(f"wrote {png}")
        return
    ledger = ctx.api.request("GET", f"/clusters/{q(name)}/cost")
    emit(ctx, ledger, lambda: _show_ledger(ledger))


def _show_ledger(ledger: dict[str, Any]) -> None:
    if ledger.get("measured_at") is None:
        out.print(f"{ledger['cluster']}: not measured yet; budget ${ledger['budget_usd']:.2f}")
        return
    out.print(
        f"[bold]{ledger['cluster']}[/] (generation {ledger['generation']}, {ledger['state']}): "
        f"${ledger['spend_usd']:.4f} of ${ledger['budget_usd']:.2f} ({ledger.get('budget_used_percent')}%), "
        f"burning ${ledger['burn_usd_per_hour']:.4f}/h, as of {ledger['measured_at']}"
    )
    if ledger.get("projected_budget_at"):
        out.print(f"  at this burn the budget is reached at {ledger['projected_budget_at']}")
    if "jobs_usd" in ledger:
        out.print(f"  jobs ${ledger['jobs_usd']:.4f}, idle ${ledger['idle_usd']:.4f}")
    table = Table("RESOURCE", "ROLE", "TYPE", "$/h", "COST")
    for item in ledger.get("breakdown", []):
        table.add_row(
            item["id"], item["role"], item.get("type") or "", f"{item['hourly_usd']:.4f}", f"{item['spend_usd']:.4f}"
        )
    out.print(table)


def _show_costs(answer: dict[str, Any]) -> None:
    table = Table("CLUSTER", "OWNER", "GEN", "STATE", "SPEND", "BUDGET", "USED", "BURN $/h")
    for row in answer["clusters"]:
        table.add_row(
            row["cluster"] or "",
            row["owner"],
            str(row["generation"]),
            row["state"] or "",
            usd(row["spend_usd"]),
            usd(row["budget_usd"]) if row.get("budget_usd") else "",
            f"{row['budget_used_percent']}%" if row.get("budget_used_percent") is not None else "",
            f"{row['burn_usd_per_hour']:.3f}",
        )
    out.print(table)
    for owner in answer["owners"]:
        out.print(
            f"{owner['owner']}: {usd(owner['spend_usd'])} over {owner['clusters']} cluster generation(s), "
            f"burning {usd(owner['burn_usd_per_hour'])}/h"
        )
    out.print(f"total {usd(answer['total_spend_usd'])}")


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as error:  # yaml.YAMLError is a ValueError's cousin: caught below too
        fail(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {error}", 2)
    except Exception as error:
        fail(f"{path}: {error}", 2)
    if not isinstance(data, dict):
        fail(f"{path}: must hold an object (the request's fields)", 2)
    return data


def main(argv: list[str] | None = None) -> int:
    """The `lsstctl` entry point: one line per error, exit codes from lsstctl.cli.client."""
    try:
        cli.main(args=argv, prog_name="lsstctl", standalone_mode=False)
    except CliError as error:
        if "--json" in (argv if argv is not None else sys.argv[1:]):
            click.echo(json.dumps(error.body, indent=2, sort_keys=True))
        err.print(f"[red]error:[/] {escape(error.message)}")
        return error.exit_code
    except click.exceptions.Abort:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as done:
        return int(done.code or 0)
    except Exception as error:  # a bug here: one line, the traceback on request
        if os.environ.get("LSSTCTL_DEBUG"):
            raise
        err.print(
            f"[red]error:[/] unexpected {type(error).__name__}: {escape(str(error))} (LSSTCTL_DEBUG=1 shows where)"
        )
        return 1
    return 0
