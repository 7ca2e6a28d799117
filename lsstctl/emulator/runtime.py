"""The local AWS emulator: moto's server on 127.0.0.1 with the glue that makes it behave
like AWS for us, the control plane's resources created in it, a real single-node Slurm
playing the head node's scheduler, and the HTTP API served by Chalice's local server."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lsstctl.adapters.pcluster_validation import EMULATOR_SUPPRESSED
from lsstctl.emulator import glue
from lsstctl.emulator.bootstrap import ROOT, RetryingSession, bootstrap

log = logging.getLogger(__name__)
# moto's server logs every request; chalice warns that IAM auth is not enforced locally
# (the X-Lsst-Principal header stands in for the signed identity, see README).
logging.getLogger("werkzeug").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="IAMAuthorizer is not a supported in local mode")

STANDIN_INSTALLER = ROOT / "lsstctl" / "emulator" / "standin" / "lsstinstall"
RUBIN_MIDDLEWARE = Path(os.environ.get("LSSTCTL_RUBIN_MIDDLEWARE", ROOT / ".venv-rubin"))
PRINCIPAL_HEADER = "X-Lsst-Principal"


def api_server_class() -> type:
    """`chalice local`'s threaded server, with a listen backlog for bursts: socketserver's is 5,
    and fifty clients connecting at once while the API was busy had a third of their
    connections reset (`make bench-load`)."""
    from chalice.local import ThreadedHTTPServer

    class Server(ThreadedHTTPServer):
        request_queue_size = 256
        daemon_threads = True  # a stop never waits on a client's open connection

    return Server


class Emulator:
    def __init__(
        self,
        workdir: Path,
        *,
        region: str = "us-east-1",
        poll_seconds: int = 1,
        poll_max_seconds: int | None = None,
        provision_seconds: float = 0,
        slurm: bool = True,
        api_port: int | None = None,
        installer_url: str | None = None,
        persist: bool = False,
        faults: Any = None,
    ):
        """`persist`: keep the AWS state in the work directory across stops and starts
        (`make serve`); `faults`: a FaultInjector for the control plane's AWS calls;
        `poll_max_seconds`: how far workflows' polls slow down as they wait (default: not at
        all, every `poll_seconds`: an emulated launch takes seconds, not AWS's 15 minutes)."""
        self.workdir = Path(workdir)
        self.persist = persist
        self.faults = faults
        self.restored = False
        self._ready = False
        self._shell: Any = None
        self._ticks = 0
        self.region = region
        self.poll_seconds = poll_seconds
        self.poll_max_seconds = poll_max_seconds or poll_seconds
        self.provision_seconds = provision_seconds
        self.use_slurm = slurm
        self.api_port = api_port
        self.installer_url = installer_url or STANDIN_INSTALLER.as_uri()
        self.settings_env: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}
        self._moto: Any = None
        self._slurm: Any = None
        self._api: Any = None
        self._api_thread: threading.Thread | None = None
        self.endpoint = ""

    # lifecycle ----------------------------------------------------------------------
    def _setenv(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    @property
    def snapshot_path(self) -> Path:
        return self.workdir / "aws-state.pickle"

    def start(self) -> Emulator:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Emulator:
        from moto.server import ThreadedMotoServer

        from lsstctl.emulator import persistence

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._setenv(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            }
        )
        if self.faults is not None:
            self.faults.install()  # before any client exists: every client gets its hooks
        saved = persistence.restore(self.snapshot_path) if self.persist else None
        self._moto = ThreadedMotoServer("127.0.0.1", port=0, verbose=False)
        self._moto.start()
        _, port = self._moto.get_host_and_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        # moto's ASL interpreter calls back into the server through MOTO_PORT.
        self._setenv({"MOTO_PORT": str(port), "AWS_ENDPOINT_URL": self.endpoint})

        shell_env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        if (RUBIN_MIDDLEWARE / "bin" / "pipetask").exists():
            # Rubin's middleware from PyPI (make deps): the stand-in stack links every tag to it.
            shell_env["LSST_STANDIN_MIDDLEWARE"] = str(RUBIN_MIDDLEWARE)
        if self.use_slurm:
            from lsstctl.emulator.slurm import LocalSlurm

            # Four CPUs whatever the machine has (jobs here mostly wait): a bps workflow (its
            # submitting job and a pilot) runs beside other jobs.
            self._slurm = LocalSlurm(self.workdir / "slurm", cpus=max(4, os.cpu_count() or 1))
            self._slurm.start()
            shell_env.update(self._slurm.env())
        (self.workdir / "nodes").mkdir(exist_ok=True)
        self._shell = glue.HeadNodeShell(env=shell_env, workdir=str(self.workdir))
        glue.install(self._shell)

        import boto3

        if saved is not None:
            # Queue URLs carry the endpoint, which changes from one start to the next.
            self.settings_env = {
                k: v.replace(saved["endpoint"], self.endpoint) for k, v in saved["settings_env"].items()
            }
            self.restored = True
        else:
            # moto's state is the process's, not the server's: a second emulator in one
            # process (`make bench-faults` runs one per mode) starts from an empty account.
            from moto.moto_api import _internal

            _internal.models.moto_api_backend.reset()
            # Created as the product creates things: every call with retries on throttling.
            self.settings_env = bootstrap(RetryingSession(boto3.Session(region_name=self.region)), self.region)
        self._setenv(
            {
                **self.settings_env,
                "LSSTCTL_POLL_SECONDS": str(self.poll_seconds),
                "LSSTCTL_POLL_MAX_SECONDS": str(self.poll_max_seconds),
                "LSSTCTL_JOB_POLL_MAX_SECONDS": str(self.poll_max_seconds),
                # Running jobs' grace at teardown, compressed like the polls (60 s on AWS).
                "LSSTCTL_TEARDOWN_GRACE_SECONDS": str(min(60, max(1, self.poll_seconds))),
                "LSSTCTL_LOCAL_PROVISION_SECONDS": str(self.provision_seconds),
                "LSSTCTL_TRUST_PRINCIPAL_HEADER": "true",
                "LSSTCTL_HEAD_NODE_ROOT": str(self.workdir / "nodes" / "{cluster}"),
                # Every emulated head node mounts the one stack cache here.
                "LSSTCTL_STACK_CACHE_ROOT": str(self.workdir / "stack-cache"),
                "LSSTCTL_LSST_INSTALLER_URL": self.installer_url,
                "LSSTCTL_SUPPRESSED_VALIDATORS": ",".join(EMULATOR_SUPPRESSED),
                # This machine has no ec2-user; the local Slurm runs jobs as root.
                "LSSTCTL_JOB_USER": "root",
            }
        )
        from lsstctl import wiring

        wiring.reset()
        if self.api_port is not None:
            self._start_api(self.api_port)
        self._ready = True
        if self.restored:
            # What was under way when the emulator stopped: resumed, re-driven or ended.
            self.invoke("lsstctl-reconciler")
        return self

    def invoke(self, function: str) -> Any:
        """Invoke a trigger as its EventBridge schedule would (the emulator plays AWS)."""
        import boto3

        return boto3.client("lambda").invoke(FunctionName=function, Payload=b"{}")

    def snapshot(self) -> int:
        """Write the AWS state to the work directory (persist mode only); bytes written."""
        from lsstctl.emulator import persistence

        if not self.persist or self._moto is None or not self._ready:
            return 0  # never a half-started emulator's state over the last good one
        return persistence.save(self.snapshot_path, {"settings_env": self.settings_env, "endpoint": self.endpoint})

    def _start_api(self, port: int) -> None:
        from chalice.config import Config
        from chalice.local import (
            ChaliceRequestHandler,
            CustomLocalChalice,
            LocalChalice,
            LocalDevServer,
        )

        class QuietHandler(ChaliceRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("api: " + format, *args)

        app_dir = ROOT / "chalice_app"
        if str(app_dir) not in sys.path:
            sys.path.insert(0, str(app_dir))
        # Once per process: the app's blueprint registers its routes on import (a second
        # emulator in the same process, one per bench-faults mode, serves the same app).
        module = sys.modules.get("lsstctl_api_app")
        if module is None:
            spec = importlib.util.spec_from_file_location("lsstctl_api_app", app_dir / "app.py")
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["lsstctl_api_app"] = module
        config = Config.create(
            chalice_app=module.app, app_name="lsstctl-api", lambda_timeout=900, lambda_memory_size=512
        )
        # What chalice.local.create_local_server does, with a handler that logs quietly.
        if not isinstance(module.app, CustomLocalChalice):
            CustomLocalChalice.__bases__ = (LocalChalice, module.app.__class__)
            module.app.__class__ = CustomLocalChalice

        server = api_server_class()
        self._api = LocalDevServer(module.app, config, "127.0.0.1", port, handler_cls=QuietHandler, server_cls=server)
        self.api_port = self._api.server.server_address[1]
        self._api_thread = threading.Thread(target=self._api.server.serve_forever, name="api", daemon=True)
        self._api_thread.start()

    def start_scheduler(self, interval: float = 60) -> None:
        """What AWS does every minute and moto does not: run each head node's cron jobs
        (the queue-depth publisher), evaluate the idle alarms, and fire the guard's schedule."""
        self._scheduler_stop = threading.Event()

        def loop() -> None:
            while not self._scheduler_stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # keep ticking; the next minute may succeed
                    log.exception("scheduler tick failed")

        threading.Thread(target=loop, name="scheduler", daemon=True).start()

    def tick(self) -> None:
        import boto3

        from lsstctl.emulator.alarms import evaluate_idle_alarms

        for cron in sorted((self.workdir / "nodes").glob("*/etc/cron.d/*")):
            for line in cron.read_text().splitlines():
                fields = line.split(None, 6)
                if len(fields) == 7 and not line.startswith("#"):
                    glue.current_shell().run(fields[6], timeout=50)
        evaluate_idle_alarms(boto3.client("cloudwatch"), datetime.now(UTC))
        self.invoke("lsstctl-guard")
        self._ticks += 1
        if self._ticks % 5 == 0:  # the reconciler's schedule: every five minutes
            self.invoke("lsstctl-reconciler")
        self.snapshot()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> None:
        """Everything the emulator started, stopped: the scheduler and the API, running
        executions and head-node commands, moto (its state saved first when persisting),
        then Slurm and munge. Safe to call twice, and after a failed start."""
        if getattr(self, "_scheduler_stop", None) is not None:
            self._scheduler_stop.set()
        if self._api is not None:
            self._api.server.shutdown()
            self._api.server.server_close()
            self._api = None
        if self._moto is not None:
            try:
                self._stop_executions()
            except Exception:  # stopping must go on whatever moto says
                log.exception("could not stop the running executions")
            if self._shell is not None:
                self._shell.stop_all()
            try:
                self.snapshot()
            except Exception:
                log.exception("could not save the emulator's state")
            self._moto.stop()
            self._moto = None
        if self._slurm is not None:
            self._slurm.stop()
            self._slurm = None
        glue.uninstall()
        if self.faults is not None:
            self.faults.uninstall()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        from lsstctl import wiring

        wiring.reset()

    def _stop_executions(self) -> None:
        """Executions run in server threads; stop them so nothing outlives the emulator."""
        import boto3

        sfn = boto3.client("stepfunctions", endpoint_url=self.endpoint, region_name=self.region)
        for machine in sfn.list_state_machines()["stateMachines"]:
            for page in sfn.get_paginator("list_executions").paginate(
                stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"
            ):
                for execution in page["executions"]:
                    try:
                        sfn.stop_execution(executionArn=execution["executionArn"], cause="emulator stopping")
                    except Exception as error:  # already finished between list and stop
                        log.debug("stop_execution: %s", error)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
