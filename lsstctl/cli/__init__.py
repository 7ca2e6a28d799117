"""The `lsstctl` command (pyproject.toml's entry point): the researcher's way to use the control
plane, over its HTTP API only. Not part of any Lambda (scripts/package.py leaves it out)."""

from __future__ import annotations


def main() -> int:
    from lsstctl.cli.commands import main as run

    return run()
