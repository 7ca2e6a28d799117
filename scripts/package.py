"""Build the control plane's Lambda artifacts, offline but for the package index (`make package`).

- `build/package/lsstctl-code.zip`: `lambdas/` and `lsstctl/` without the emulator (the
  local AWS test double never ships) and without bytecode caches;
- `build/package/lsstctl-deps-layer.zip`: requirements.txt's pinned packages as Lambda's
  python3.12 x86_64 runtime imports them (manylinux wheels only, `python/` prefix);
- `build/package/aws-parallelcluster-layer.zip`: the engine function's layer. AWS documents
  it at s3://<region>-aws-parallelcluster/parallelcluster/<version>/layers/aws-parallelcluster/
  lambda-layer.zip; the deploy step copies that one. Here it is built from the pinned version
  (requirements-dev.txt) for when that copy fails (`--no-pcluster-layer` skips it).

Reproducible: every zip has sorted entries, fixed timestamps and permissions, so the same
inputs give the same bytes (their SHA-256 are printed and written to `build/package/
SHA256SUMS`). Each artifact's size is printed against Lambda's limits: 50 MB zipped for a
direct upload, 250 MB unzipped for a function and all its layers.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "package"
ZIPPED_LIMIT = 50 * 10**6
UNZIPPED_LIMIT = 250 * 10**6
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
EXCLUDED_DIRS = {"__pycache__", "emulator", ".pytest_cache"}
RUNTIME = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]


def code_files() -> list[tuple[Path, str]]:
    """(source, name in the zip) of the code: lambdas/ and lsstctl/, the emulator excluded."""
    files: list[tuple[Path, str]] = []
    for top in ("lambdas", "lsstctl"):
        for path in sorted((ROOT / top).rglob("*")):
            relative = path.relative_to(ROOT)
            if path.is_dir() or EXCLUDED_DIRS & set(relative.parts) or path.suffix in {".pyc", ".pyo"}:
                continue
            files.append((path, relative.as_posix()))
    return files


def deterministic_zip(target: Path, files: list[tuple[Path, str]]) -> None:
    """The same files give the same bytes: sorted names, fixed times and modes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for source, name in sorted(files, key=lambda f: f[1]):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = (0o755 if os.access(source, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _content(source, name), compresslevel=9)


def _content(source: Path, name: str) -> bytes:
    """A file's bytes as shipped: a wheel's RECORD loses its lines for the console scripts
    left out (their hashes depend on the building machine's Python path)."""
    data = source.read_bytes()
    if name.endswith(".dist-info/RECORD"):
        data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"../../bin/"))
    return data


def tree_files(root: Path, prefix: str) -> list[tuple[Path, str]]:
    """An installed tree as a layer's files. Console scripts (bin/) are left out: Lambda never
    runs them, and their shebang names the building machine's Python (a different zip per
    checkout)."""
    return [(p, f"{prefix}/{p.relative_to(root).as_posix()}") for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            and p.relative_to(root).parts[0] != "bin"]


def pinned(requirements: Path, name: str) -> str:
    """The `name==version` line of a requirements file (what the layer is built from)."""
    for line in requirements.read_text().splitlines():
        if re.match(rf"^{re.escape(name)}==", line.strip()):
            return line.strip()
    raise SystemExit(f"{requirements.name} pins no {name}")


def install_for_lambda(requirements: list[str], target: Path) -> None:
    """pip installs for Lambda's runtime, not this machine's: wheels only, python3.12, x86_64."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
               "--target", str(target), *RUNTIME, *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip could not build the layer from the package index:\n{done.stderr[-2000:]}")


def unzipped_size(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist())


def report(artifacts: list[Path]) -> list[str]:
    """One line per artifact: zipped and unzipped size against Lambda's limits, and its hash."""
    lines = [f"{'artifact':<34} {'zipped MB':>10} {'of 50':>6} {'unzipped MB':>12} {'of 250':>7}  sha256"]
    for path in artifacts:
        zipped, unzipped = path.stat().st_size, unzipped_size(path)
        lines.append(f"{path.name:<34} {zipped / 1e6:>10.2f} {100 * zipped / ZIPPED_LIMIT:>5.0f}% "
                     f"{unzipped / 1e6:>12.2f} {100 * unzipped / UNZIPPED_LIMIT:>6.0f}%  "
                     f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-pcluster-layer", action="store_true", help="skip building ParallelCluster's layer")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    artifacts = [args.out / "lsstctl-code.zip"]
    deterministic_zip(artifacts[0], code_files())

    work = Path(tempfile.mkdtemp(prefix="lsstctl-package-"))
    try:
        deps = work / "deps"
        requirements = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                        if line.strip() and not line.startswith("#")]
        install_for_lambda(requirements, deps)
        artifacts.append(args.out / "lsstctl-deps-layer.zip")
        deterministic_zip(artifacts[-1], tree_files(deps, "python"))
        if not args.no_pcluster_layer:
            pcluster = work / "pcluster"
            install_for_lambda([pinned(ROOT / "requirements-dev.txt", "aws-parallelcluster")], pcluster)
            artifacts.append(args.out / "aws-parallelcluster-layer.zip")
            deterministic_zip(artifacts[-1], tree_files(pcluster, "python"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = report(artifacts)
    sizes = {p.name: unzipped_size(p) for p in artifacts}
    functions = {"every function (code + deps layer)": ["lsstctl-code.zip", "lsstctl-deps-layer.zip"]}
    if "aws-parallelcluster-layer.zip" in sizes:
        functions["the engine function (+ ParallelCluster's layer)"] = [*functions["every function (code + deps layer)"],
                                                                        "aws-parallelcluster-layer.zip"]
    for label, parts in functions.items():
        total = sum(sizes[p] for p in parts)
        lines.append(f"{label}: {total / 1e6:.1f} MB unzipped of Lambda's 250 MB "
                     f"({'fits' if total <= UNZIPPED_LIMIT else 'DOES NOT FIT'})")
    (args.out / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in artifacts))
    print("\n".join(lines))
    over = [p.name for p in artifacts if p.stat().st_size > ZIPPED_LIMIT and p.name != "aws-parallelcluster-layer.zip"]
    if over:
        print(f"over Lambda's 50 MB direct-upload limit (upload through S3): {', '.join(over)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
