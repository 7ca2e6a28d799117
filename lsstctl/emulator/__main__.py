"""`python -m lsstctl.emulator demo|serve` (what `make demo` and `make serve` run)."""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time

from lsstctl.emulator.bootstrap import ROOT
from lsstctl.emulator.runtime import PRINCIPAL_HEADER, Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lsstctl.emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole lifecycle through the HTTP API and exit")
    demo.add_argument("--keep", action="store_true", help="keep the emulator's work directory")
    serve = sub.add_parser("serve", help="keep the emulator and the API running")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--poll-seconds", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    workdir = ROOT / ".emulator" / args.command
    shutil.rmtree(workdir, ignore_errors=True)
    if args.command == "demo":
        from lsstctl.emulator.demo import run_demo

        with Emulator(workdir, api_port=0, poll_seconds=1, provision_seconds=1) as emulator:
            ok = run_demo(emulator)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0 if ok else 1

    with Emulator(workdir, api_port=args.port, poll_seconds=args.poll_seconds, provision_seconds=2) as emulator:
        emulator.start_scheduler()
        print(f"lsstctl control plane on {emulator.api_url}  (AWS emulator on {emulator.endpoint})")
        print(f"Local identity: send '{PRINCIPAL_HEADER}: <name>' (admin: 'admin'). Ctrl-C stops everything.")
        print("Every minute: head-node publishers, idle alarms and the spend guard run, as on AWS.")
        print(f"  curl -s -H '{PRINCIPAL_HEADER}: alice' {emulator.api_url}/clusters")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
