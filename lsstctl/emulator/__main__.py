"""`python -m lsstctl.emulator demo|serve` (what `make demo` and `make serve` run).

`serve` keeps its state in .emulator/serve/ (AWS state, Slurm state, head-node storage):
stopped and started again, the same users, clusters, jobs and ledgers are there. SIGTERM,
SIGINT and SIGHUP all stop it the same way (everything it started, stopped); one serve at
a time may use a work directory.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lsstctl.emulator.bootstrap import ROOT
from lsstctl.emulator.runtime import PRINCIPAL_HEADER, Emulator
from lsstctl.emulator.stopping import Stop, stop_on_signals


class AlreadyRunning(Exception):
    pass


@contextmanager
def exclusive(workdir: Path) -> Iterator[Path]:
    """Hold the work directory's lock for the whole run; a second serve gets AlreadyRunning
    before it touches anything."""
    workdir.mkdir(parents=True, exist_ok=True)
    lock_path = workdir / "serve.lock"
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise AlreadyRunning(handle.read().strip() or "another process") from None
    try:
        yield lock_path
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _faults() -> Any:
    spec = os.environ.get("LSSTCTL_FAULTS", "").strip()
    if not spec:
        return None
    from lsstctl.emulator.faults import FaultInjector

    return FaultInjector.from_spec(spec)


def serve(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else ROOT / ".emulator" / "serve"
    try:
        with exclusive(workdir) as lock_path:
            if args.fresh:
                for child in workdir.iterdir():
                    if child != lock_path:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            stop_on_signals()
            emulator = Emulator(
                workdir,
                api_port=args.port,
                poll_seconds=args.poll_seconds,
                provision_seconds=2,
                persist=True,
                faults=_faults(),
            )
            try:
                emulator.start()
                lock_path.write_text(json.dumps({"pid": os.getpid(), "api": emulator.api_url}))
                emulator.start_scheduler()
                _announce(emulator)
                while True:
                    time.sleep(3600)
            except Stop as stop:
                print(f"stopping ({stop})", flush=True)
            finally:
                emulator.stop()
            print("stopped: state kept in", workdir, flush=True)
    except AlreadyRunning as running:
        print(f"lsstctl serve is already running on {workdir} ({running}); stop it first", file=sys.stderr)
        return 1
    return 0


def _announce(emulator: Emulator) -> None:
    print(f"lsstctl control plane on {emulator.api_url}  (AWS emulator on {emulator.endpoint})")
    print(
        "State " + ("restored from" if emulator.restored else "kept in") + f" {emulator.workdir}"
        " (--fresh starts empty)."
    )
    if emulator.faults is not None:
        print(f"Fault injection on: {emulator.faults.summary()}")
    print(f"Local identity: send '{PRINCIPAL_HEADER}: <name>' (admin: 'admin'). Ctrl-C or SIGTERM stops everything.")
    print(
        "Every minute: head-node publishers, idle alarms and the spend guard run, as on AWS; every five the reconciler."
    )
    print(f"  curl -s -H '{PRINCIPAL_HEADER}: alice' {emulator.api_url}/clusters", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lsstctl.emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole lifecycle through the HTTP API and exit")
    demo.add_argument("--keep", action="store_true", help="keep the emulator's work directory")
    serve_cmd = sub.add_parser("serve", help="keep the emulator and the API running")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--poll-seconds", type=int, default=2)
    serve_cmd.add_argument("--workdir", help="where the state lives (default .emulator/serve)")
    serve_cmd.add_argument("--fresh", action="store_true", help="forget the saved state first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "serve":
        return serve(args)
    from lsstctl.emulator.demo import run_demo

    workdir = ROOT / ".emulator" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    with Emulator(workdir, api_port=0, poll_seconds=1, provision_seconds=1) as emulator:
        ok = run_demo(emulator)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
