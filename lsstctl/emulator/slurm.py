"""A real single-node Slurm for the offline emulator.

Offline, this machine plays the ParallelCluster head node. Running the genuine Slurm
daemons (rather than faking sbatch/squeue output) means job submission, state
transitions and `scontrol show job` parsing are exercised against the real thing.

Everything a ``LocalSlurm`` writes (config, state, spool, pid and log files) lives in
its ``workdir``; the controller and slurmd ports are picked free at start, so several
instances or test runs can coexist on one machine. Needs root (SlurmUser=root) and the
Debian packages installed by ``scripts/install-system-packages.sh``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

NODE_NAME = "localhost"
PARTITION = "compute"
CLUSTER_NAME = "lsstctl-emulator"

# Daemons live in /usr/sbin, which is often missing from a non-login PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_REQUIRED = ("slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "munged", "munge")
_MUNGE_KEY = Path("/etc/munge/munge.key")
_MUNGE_RUN_DIR = Path("/run/munge")


class SlurmStartError(RuntimeError):
    """The local Slurm could not be brought to an idle node; message has log tails."""


def _which(name: str) -> str:
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise SlurmStartError(f"{name} not found; run scripts/install-system-packages.sh")
    return path


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for free TCP ports (all held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- {path} (last {lines} lines):\n" + "\n".join(text[-lines:])


def _stop_process(proc: subprocess.Popen[bytes], name: str, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM; killing", name, proc.pid)
        proc.kill()
        proc.wait(timeout=timeout)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not gone within `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            if _zombie(pid):
                return
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists() and not _zombie(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Last-resort cleanup at interpreter exit if stop() was never called."""
    for name in reversed(list(procs)):
        _stop_process(procs[name], name)
    procs.clear()


class LocalSlurm:
    """slurmctld + slurmd (+ munged if none is running) on this machine, one node.

    Use as a context manager, or call ``start()`` / ``stop()``; client commands need
    the variables from ``env()``.
    """

    def __init__(self, workdir: Path, cpus: int | None = None, memory_mb: int = 2000) -> None:
        self.workdir = Path(workdir).resolve()
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.conf_path = self.workdir / "slurm.conf"
        self.log_dir = self.workdir / "log"
        self.ctld_port: int | None = None
        self.slurmd_port: int | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- public API ----------------------------------------------------------------

    @staticmethod
    def available() -> bool:
        """Whether the Slurm and munge binaries are installed."""
        return all(shutil.which(n, path=_SEARCH_PATH) for n in _REQUIRED)

    @property
    def running(self) -> bool:
        """True while the daemons this instance started are alive."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the daemons this instance started (munged only if it started it)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def env(self) -> dict[str, str]:
        """Variables a shell needs so sbatch/squeue/scontrol talk to this Slurm."""
        return {"SLURM_CONF": str(self.conf_path)}

    def start(self, timeout: float = 30) -> None:
        """Write slurm.conf, start the daemons and wait until the node is idle. Daemons
        left running in this work directory by a run that was killed are stopped first."""
        if self._procs:
            raise SlurmStartError("LocalSlurm already started; call stop() first")
        if os.geteuid() != 0:
            raise SlurmStartError("LocalSlurm needs root (SlurmUser/SlurmdUser=root)")
        t0 = time.monotonic()
        for sub in ("state", "spool", "run", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        if stopped := self.stop_leftovers():
            log.warning("stopped daemons a killed run left behind: %s", stopped)
        self.ctld_port, self.slurmd_port = _free_ports(2)
        self.conf_path.write_text(self._render_conf())
        # Daemons run in their own session, so make sure they die with this process.
        weakref.finalize(self, _stop_all, self._procs)
        try:
            self._ensure_munged(deadline=t0 + timeout)
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf_path)])
            # slurmd retries registration only every ~1 s, so start it once ctld listens.
            self._wait_ctld_listening(deadline=t0 + timeout)
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE_NAME, "-f", str(self.conf_path)])
            self._record_pids()
            self._wait_idle(deadline=t0 + timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "local Slurm idle in %.1fs (ctld port %d, slurmd port %d, conf %s)",
            time.monotonic() - t0,
            self.ctld_port,
            self.slurmd_port,
            self.conf_path,
        )

    def stop(self) -> None:
        """Cancel leftover jobs, then stop the daemons this instance started."""
        if not self._procs:
            return
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            self._cancel_all_jobs()
        # Reverse start order: slurmd, slurmctld, then munged (only if ours).
        for name in reversed(list(self._procs)):
            _stop_process(self._procs[name], name)
        log.info("local Slurm stopped (%s)", ", ".join(self._procs))
        self._procs.clear()
        self._pid_record.unlink(missing_ok=True)

    # -- leftovers of a killed run ---------------------------------------------------

    @property
    def _pid_record(self) -> Path:
        return self.workdir / "run" / "daemons.json"

    def _record_pids(self) -> None:
        """Which daemons this instance runs (with their command lines), for stop_leftovers."""
        record = {name: {"pid": proc.pid, "cmdline": _cmdline(proc.pid)} for name, proc in self._procs.items()}
        self._pid_record.write_text(json.dumps(record))

    def stop_leftovers(self, timeout: float = 10) -> list[str]:
        """Stop daemons that a run in this work directory started and never stopped (it
        was killed): those recorded in run/daemons.json that still run the same command."""
        try:
            record = json.loads(self._pid_record.read_text())
        except (OSError, ValueError):
            return []
        stopped = []
        for name, entry in record.items():
            pid, cmdline = int(entry["pid"]), entry.get("cmdline") or ""
            if cmdline and _cmdline(pid) == cmdline:
                _terminate(pid, timeout)
                stopped.append(f"{name} (pid {pid})")
        self._pid_record.unlink(missing_ok=True)
        return stopped

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------

    def _render_conf(self) -> str:
        w = self.workdir
        lines = [
            "# Generated by lsstctl.emulator.slurm.LocalSlurm: single-node emulator cluster.",
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={NODE_NAME}",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={w / 'jobcomp.log'}",
            "SchedulerType=sched/backfill",
            # Default batch_sched_delay=3 holds each new batch job up to 3 s; start now.
            "SchedulerParameters=batch_sched_delay=0",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            # Configured CPUs/memory are authoritative, so cpus > real cores still works.
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            # Keep finished jobs visible to `scontrol show job` for an hour.
            "MinJobAge=3600",
            "MailProg=/bin/true",
            f"StateSaveLocation={w / 'state'}",
            f"SlurmdSpoolDir={w / 'spool'}",
            f"SlurmctldPidFile={w / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={w / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            f"NodeName={NODE_NAME} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE_NAME} Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _daemon_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Inherited SLURM_* (e.g. when run inside a Slurm job) would confuse the daemons.
        for key in [k for k in env if k.startswith("SLURM_")]:
            del env[key]
        env.update(self.env())
        return env

    def _spawn(self, name: str, argv: list[str], user: str | None = None) -> None:
        with open(self.log_dir / f"{name}.stderr", "ab") as out:
            self._procs[name] = subprocess.Popen(
                argv,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                env=self._daemon_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # keep terminal Ctrl-C away; we stop them ourselves
            )
        log.debug("started %s (pid %d)", name, self._procs[name].pid)

    def _munge_ok(self) -> bool:
        return (
            subprocess.run(
                [_which("munge"), "-n"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            ).returncode
            == 0
        )

    def _ensure_munged(self, deadline: float) -> None:
        """Reuse a responding munged; otherwise start one as the munge user."""
        if self._munge_ok():
            log.debug("reusing running munged")
            return
        if not _MUNGE_KEY.exists():
            self._create_munge_key()
        _MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(_MUNGE_RUN_DIR, "munge", "munge")
        _MUNGE_RUN_DIR.chmod(0o755)
        # Run as the munge user directly (not via runuser) so the Popen handle is munged
        # itself and stop() reaps it.
        self._spawn("munged", [_which("munged"), "--foreground"], user="munge")
        while time.monotonic() < deadline:
            if self._munge_ok():
                return
            if self._procs["munged"].poll() is not None:
                break
            time.sleep(0.1)
        raise SlurmStartError("munged did not come up\n" + self._log_tails())

    @staticmethod
    def _create_munge_key() -> None:
        log.info("creating missing munge key %s", _MUNGE_KEY)
        _MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        if shutil.which("mungekey", path=_SEARCH_PATH):
            cmd = [_which("mungekey"), "--create", "--keyfile", str(_MUNGE_KEY)]
        else:
            cmd = [_which("create-munge-key"), "-f"]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        shutil.chown(_MUNGE_KEY, "munge", "munge")
        _MUNGE_KEY.chmod(0o600)

    def _client(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_which(argv[0]), *argv[1:]],
            env=self._daemon_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _node_state(self) -> str:
        try:
            res = self._client("sinfo", "-h", "-n", NODE_NAME, "-o", "%T", timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        return res.stdout.strip().lower() if res.returncode == 0 else ""

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise SlurmStartError(f"{name} exited with status {proc.returncode} during start\n" + self._log_tails())

    def _wait_ctld_listening(self, deadline: float) -> None:
        """Probe the controller port (cheaper than sinfo, which retries once a second)."""
        assert self.ctld_port is not None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("localhost", self.ctld_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SlurmStartError(f"slurmctld not listening on port {self.ctld_port} after timeout\n" + self._log_tails())

    def _wait_idle(self, deadline: float) -> None:
        """Poll sinfo until the node is idle; resume it if it came up down/drained."""
        state = ""
        last_resume = 0.0
        while time.monotonic() < deadline:
            self._check_alive()
            state = self._node_state()
            if state == "idle":  # "idle*" would mean registered once, not responding now
                return
            responding = state and not state.endswith("*")
            stuck = responding and state.startswith(("down", "drain"))
            if stuck and time.monotonic() - last_resume > 1:
                log.info("node %s is %s; resuming", NODE_NAME, state)
                self._client("scontrol", "update", f"nodename={NODE_NAME}", "state=resume")
                last_resume = time.monotonic()
            time.sleep(0.2)
        raise SlurmStartError(
            f"node {NODE_NAME} not idle after timeout (last state {state or 'unknown'!r})\n" + self._log_tails()
        )

    def _cancel_all_jobs(self) -> None:
        """Cancel queued/running jobs so no slurmstepd outlives slurmd."""
        try:
            res = self._client("squeue", "-h", "-o", "%A", timeout=5)
            ids = res.stdout.split()
            if ids:
                self._client("scancel", *ids, timeout=5)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    if not self._client("squeue", "-h", "-o", "%A", timeout=5).stdout.split():
                        break
                    time.sleep(0.2)
        except (subprocess.TimeoutExpired, SlurmStartError):
            log.warning("could not cancel leftover jobs before stopping")

    def _log_tails(self) -> str:
        files = sorted(self.log_dir.glob("*.log")) + sorted(self.log_dir.glob("*.stderr"))
        return "\n".join(_tail(p) for p in files) or f"(no logs in {self.log_dir})"
