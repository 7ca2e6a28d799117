"""Build the control plane's Lambda artifacts, offline but for the package index (`make package`).

- `build/package/lsstctl-code.zip`: `lambdas/` and `lsstctl/` without the emulator (the
  local AWS test double never ships) and without bytecode caches;
- `build/package/lsstctl-deps-layer.zip`: requirements.txt's pinned packages as Lambda's
  python3.12 x86_64 runtime imports them (manylinux wheels only, `python/` prefix);
- `build/package/lsstctl-api.zip`: the HTTP API, `chalice package` of `chalice_app/` (its
  routes, Chalice's runtime and `lsstctl/` without the emulator; dependencies come from the
  layer), and `build/package/control-plane.json`: `infra/control-plane.yaml` with what
  `chalice package` generated merged in (the REST API's OpenAPI body, every route SigV4,
  proxied to the API function; the deployment renamed after the body's digest so a changed
  API is redeployed). This template is what `make deploy` ships;
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
import json
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
# Not in any Lambda: the local emulator (a test double) and the `lsstctl` command (a client).
EXCLUDED_DIRS = {"__pycache__", "emulator", "cli", ".pytest_cache"}
TEMPLATE = ROOT / "infra" / "control-plane.yaml"
API_FUNCTION_ARN = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${Prefix}-api"
# Chalice's name for the function in what it generates; ours is ApiFunction (by name, above).
CHALICE_FUNCTION_ARN = "${APIHandler.Arn}"
RUNTIME = [
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--only-binary=:all:",
]


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
    return [
        (p, f"{prefix}/{p.relative_to(root).as_posix()}")
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and p.relative_to(root).parts[0] != "bin"
    ]


def chalice_package(work: Path) -> tuple[list[tuple[Path, str]], dict[str, object]]:
    """`chalice package` of chalice_app/: (the API's files, the REST API's OpenAPI body).

    The app is staged with lsstctl/ copied in without the emulator (chalice follows
    vendor/'s symlink, which would ship it) and with no requirements (the dependencies'
    layer carries them, built for python3.12; chalice would build for this machine's Python).
    """
    app = work / "chalice_app"
    shutil.copytree(
        ROOT / "chalice_app",
        app,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "vendor", "deployed"),
    )
    shutil.copytree(
        ROOT / "lsstctl",
        app / "vendor" / "lsstctl",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *EXCLUDED_DIRS),
    )
    (app / "requirements.txt").write_text("# Dependencies come from the lsstctl-deps-layer.\n")
    out = work / "chalice-out"
    chalice = Path(sys.executable).with_name("chalice")
    done = subprocess.run(
        [str(chalice), "package", "--stage", "prod", str(out)],
        cwd=app,
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")},
    )
    if done.returncode != 0:
        raise SystemExit(f"chalice package failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    generated = json.loads((out / "sam.json").read_text())
    body = generated["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    unpacked = work / "api"
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        archive.extractall(unpacked)
    files = [(path, path.relative_to(unpacked).as_posix()) for path in sorted(unpacked.rglob("*")) if path.is_file()]
    return files, body


def packaged_template(body: dict[str, object]) -> dict[str, object]:
    """infra/control-plane.yaml with the API's generated body in RestApi, the integration
    pointed at ApiFunction by name, and ApiDeployment renamed after the body's digest."""
    from cfnlint.decode import decode

    template, matches = decode(str(TEMPLATE))
    if matches or template is None:
        raise SystemExit(f"{TEMPLATE} does not parse: {[str(m) for m in matches]}")
    text = json.dumps(body, sort_keys=True)
    if CHALICE_FUNCTION_ARN not in text:
        raise SystemExit("chalice's OpenAPI body no longer names ${APIHandler.Arn}: update scripts/package.py")
    text = text.replace(CHALICE_FUNCTION_ARN, API_FUNCTION_ARN)
    resources = template["Resources"]
    resources["RestApi"]["Properties"]["Body"] = json.loads(text)
    deployment = f"ApiDeployment{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    resources[deployment] = resources.pop("ApiDeployment")
    resources[deployment]["Properties"]["Description"] = f"API body {deployment[len('ApiDeployment') :]}"
    resources["ApiStage"]["Properties"]["DeploymentId"] = {"Ref": deployment}
    return json.loads(json.dumps(template))


def build_api(out: Path) -> tuple[Path, Path]:
    """(lsstctl-api.zip, control-plane.json) in `out`: the API's code and the template to deploy."""
    work = Path(tempfile.mkdtemp(prefix="lsstctl-api-"))
    try:
        files, body = chalice_package(work)
        api_zip = out / "lsstctl-api.zip"
        deterministic_zip(api_zip, files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    template = out / "control-plane.json"
    template.write_text(json.dumps(packaged_template(body), indent=1) + "\n")
    return api_zip, template


def pinned(requirements: Path, name: str) -> str:
    """The `name==version` line of a requirements file (what the layer is built from)."""
    for line in requirements.read_text().splitlines():
        if re.match(rf"^{re.escape(name)}==", line.strip()):
            return line.strip()
    raise SystemExit(f"{requirements.name} pins no {name}")


def install_for_lambda(requirements: list[str], target: Path) -> None:
    """pip installs for Lambda's runtime, not this machine's: wheels only, python3.12, x86_64."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        *RUNTIME,
        *requirements,
    ]
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
        lines.append(
            f"{path.name:<34} {zipped / 1e6:>10.2f} {100 * zipped / ZIPPED_LIMIT:>5.0f}% "
            f"{unzipped / 1e6:>12.2f} {100 * unzipped / UNZIPPED_LIMIT:>6.0f}%  "
            f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-pcluster-layer", action="store_true", help="skip building ParallelCluster's layer")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    artifacts = [args.out / "lsstctl-code.zip"]
    deterministic_zip(artifacts[0], code_files())
    api_zip, template = build_api(args.out)
    artifacts.append(api_zip)

    work = Path(tempfile.mkdtemp(prefix="lsstctl-package-"))
    try:
        deps = work / "deps"
        requirements = [
            line.strip()
            for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
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
    functions = {
        "every function (code + deps layer)": ["lsstctl-code.zip", "lsstctl-deps-layer.zip"],
        "the API function (its code + deps layer)": ["lsstctl-api.zip", "lsstctl-deps-layer.zip"],
    }
    if "aws-parallelcluster-layer.zip" in sizes:
        functions["the engine function (+ ParallelCluster's layer)"] = [
            *functions["every function (code + deps layer)"],
            "aws-parallelcluster-layer.zip",
        ]
    for label, parts in functions.items():
        total = sum(sizes[p] for p in parts)
        lines.append(
            f"{label}: {total / 1e6:.1f} MB unzipped of Lambda's 250 MB "
            f"({'fits' if total <= UNZIPPED_LIMIT else 'DOES NOT FIT'})"
        )
    (args.out / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in [*artifacts, template])
    )
    lines.append(
        f"{template.name}: {len(json.loads(template.read_text())['Resources'])} resources, "
        f"{template.stat().st_size / 1e3:.0f} kB (CloudFormation's limit through S3: 1,000 kB)"
    )
    print("\n".join(lines))
    over = [p.name for p in artifacts if p.stat().st_size > ZIPPED_LIMIT and p.name != "aws-parallelcluster-layer.zip"]
    if over:
        print(f"over Lambda's 50 MB direct-upload limit (upload through S3): {', '.join(over)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
