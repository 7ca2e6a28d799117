"""What `make package` ships: the product, never its local test double."""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import package  # noqa: E402  (scripts/package.py)


def test_the_code_zip_carries_the_handlers_and_the_core_but_no_emulator():
    names = [name for _, name in package.code_files()]
    assert "lambdas/engine.py" in names and "lsstctl/adapters/pcluster_engine.py" in names
    assert "lsstctl/data/price_catalog.json" in names
    assert not [n for n in names if "/emulator/" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("lsstctl/cli/")]  # the command line is a client


def test_the_package_and_the_requirement_files_pin_the_same_versions():
    import tomllib

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == [
        "requirements.txt",
        "requirements-cli.txt",
    ]
    assert project["project"]["scripts"] == {"lsstctl": "lsstctl.cli:main"}
    pinned = {}
    for name in ("requirements.txt", "requirements-cli.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                pinned[package.split("[")[0].lower()] = version.strip()
    extras = [r for group in project["project"]["optional-dependencies"].values() for r in group]
    assert len(extras) >= 10
    for requirement in extras:
        package, version = requirement.split("==")
        assert pinned.get(package.split("[")[0].lower()) == version, requirement


def test_nothing_shipped_imports_the_emulator():
    offenders = []
    for source, name in package.code_files():
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            offenders += [f"{name}: {m}" for m in modules if m.startswith("lsstctl.emulator")]
    assert offenders == []


def test_zips_are_reproducible(tmp_path):
    files = package.code_files()
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    package.deterministic_zip(first, files)
    package.deterministic_zip(second, list(reversed(files)))
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {i.date_time for i in archive.infolist()} == {package.FIXED_TIME}


def test_sizes_are_reported_against_lambdas_limits(tmp_path):
    target = tmp_path / "lsstctl-code.zip"
    package.deterministic_zip(target, package.code_files())
    header, line = package.report([target])
    assert "of 50" in header and "of 250" in header and line.startswith("lsstctl-code.zip")
