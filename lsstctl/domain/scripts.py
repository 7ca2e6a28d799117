"""Shell scripts sent to the head node (SSM Run Command). Pure rendering; every value
that reaches a shell is quoted with shlex."""

from __future__ import annotations

import base64
import json
import shlex
from dataclasses import dataclass

from lsstctl.domain.models import JobSpec

STACK_SUBDIR = "lsst_stack"
# What an install prints when the tag is there already (the stack cache's hit).
INSTALL_SKIPPED = "already installed"
OUTPUTS_SUBDIR = "outputs"
JOB_LOG = "slurm-%j.out"
JOB_ARRAY_LOG = "slurm-%A_%a.out"

INSTALL_TEMPLATE = r"""#!/bin/bash
# Install the LSST Science Pipelines (lsst_distrib <tag>, binary) as Rubin documents it:
# lsstinstall -T <tag>, then eups distrib install. One directory per tag, a group-writable
# setgid shared stack. Idempotent: an installed tag is skipped, and a lock serialises
# concurrent runs (SSM may deliver twice). Downloads are retried, every step has a deadline,
# and the log goes to the cluster's archive prefix in S3 whatever happens.
set -euo pipefail
STACK_DIR={stack_dir}
TAG={tag}
INSTALLER_URL={installer_url}
LOG_URI={log_uri}
RETENTION_DAYS={retention_days}
DEADLINE=$(( $(date +%s) + {timeout_seconds} ))
umask 002
mkdir -p "$STACK_DIR"
chmod g+ws "$(dirname "$STACK_DIR")" "$STACK_DIR" || true
exec 9>"$STACK_DIR/.install.lock"
flock 9
cd "$STACK_DIR"
# Retention (the stack cache): this tag is in use; a tag nobody used for RETENTION_DAYS goes,
# unless an install of it holds its lock.
touch "$STACK_DIR/.last-used"
for other in "$(dirname "$STACK_DIR")"/*/; do
  other=${{other%/}}
  if [ "$other" != "$STACK_DIR" ] && [ -f "$other/.last-used" ] \
      && [ -n "$(find "$other/.last-used" -mtime +"$RETENTION_DAYS")" ]; then
    if flock -n "$other/.install.lock" rm -rf "$other"; then
      echo "removed $other from the stack cache: unused for more than $RETENTION_DAYS days"
    fi
  fi
done
LOG="$STACK_DIR/install.$(date -u +%Y%m%dT%H%M%SZ).$$.log"
ship_log() {{
  if [ -n "$LOG_URI" ]; then
    aws s3 cp --only-show-errors "$LOG" "$LOG_URI" || echo "could not copy the install log to $LOG_URI" >&2
  fi
}}
trap ship_log EXIT
{demo_repo}
if [ -f loadLSST.bash ]; then
  set +u  # loadLSST reads unset variables
  # shellcheck source=/dev/null
  source loadLSST.bash
  set -u
  if [ -n "$(eups list -t "$TAG" lsst_distrib 2>/dev/null)" ]; then
    demo_repo 2>&1 | tee -a "$LOG"
    echo "lsst_distrib $TAG {skipped} in $STACK_DIR: skipped" | tee -a "$LOG"
    exit 0
  fi
fi
left() {{
  echo $(( DEADLINE - $(date +%s) > 1 ? DEADLINE - $(date +%s) : 1 ))
}}
install() {{
  curl -fsSL --retry 5 --retry-delay 10 --retry-connrefused --max-time 300 -o lsstinstall "$INSTALLER_URL"
  chmod u+x lsstinstall
  timeout "$(left)" ./lsstinstall -T "$TAG"
  set +u
  # shellcheck source=/dev/null
  source loadLSST.bash
  set -u
  for attempt in 1 2 3; do
    if timeout "$(left)" eups distrib install -t "$TAG" lsst_distrib; then
      return 0
    fi
    echo "eups distrib install failed (attempt $attempt of 3)" >&2
    [ "$attempt" -lt 3 ] && sleep $(( attempt * 30 ))
  done
  return 1
}}
install 2>&1 | tee -a "$LOG"
demo_repo 2>&1 | tee -a "$LOG"
echo "lsst_distrib $TAG installed in $STACK_DIR"
"""

# A small Butler repository on the cluster's shared storage to try pipelines on: pipe_base's
# own test pipeline (three chained AddTasks) and instrument, populated with its input dataset
# (lsst.pipe.base.tests.simpleQGraph; in every lsst_distrib and in the middleware on PyPI).
# Made once; a stack without pipe_base's tests gets a warning, never a failed install.
DEMO_SUBDIR = "demo"
DEMO_INPUTS = "demo/inputs"
DEMO_REPO_TEMPLATE = r"""demo_repo() {{
  # shellcheck disable=SC2016  # the path is quoted by shlex: a `$` in it is text
  local demo={demo_dir} template="$STACK_DIR/demo-template"
  if [ -f "$demo/repo/butler.yaml" ] && [ -f "$demo/pipeline.yaml" ]; then
    echo "demo Butler repository: $demo/repo (there already)"
    return 0
  fi
  # Made once per tag next to the stack (a Butler repository is relocatable), copied per cluster.
  if [ ! -f "$template/repo/butler.yaml" ] && ! (
    rm -rf "$template" && mkdir -p "$template" && cd "$template"
    set +u
    # shellcheck source=/dev/null
    source "$STACK_DIR/loadLSST.bash"
    setup lsst_distrib
    set -u
    python - <<'LSSTCTL_DEMO_REPO'
from lsst.pipe.base.tests.simpleQGraph import makeSimpleButler, makeSimplePipeline, populateButler

pipeline = makeSimplePipeline(3, instrument="lsst.pipe.base.tests.simpleQGraph.SimpleInstrument")
pipeline.write_to_uri("pipeline.yaml")
butler = makeSimpleButler("repo", run="{inputs}", inMemory=False)
populateButler(pipeline, butler)
LSSTCTL_DEMO_REPO
  ); then
    rm -rf "$template"
    echo "no demo Butler repository: this stack could not make one (see above)" >&2
    return 0
  fi
  mkdir -p "$demo"
  cp -a "$template/repo" "$template/pipeline.yaml" "$demo/"
  chown -R {run_as} "$demo" || true
  echo "demo Butler repository: $demo/repo (input collection {inputs}, pipeline $demo/pipeline.yaml)"
}}
"""


# Each cluster publishes in a namespace of its own: the head node's role may put metrics
# there and nowhere else (lsstctl.domain.policies.head_node_metrics_policy), so no head
# node can feed another cluster's idle alarm.
QUEUE_DEPTH_NAMESPACE_PREFIX = "LsstControlPlane/Slurm"
QUEUE_DEPTH_METRIC = "QueueDepth"


def queue_depth_namespace(cluster: str) -> str:
    return f"{QUEUE_DEPTH_NAMESPACE_PREFIX}/{cluster}"


PUBLISHER_TEMPLATE = r"""# Queue-depth publisher: every minute, pending + running Slurm jobs go to CloudWatch, where
# the cluster's idle alarm watches them (no data at all counts as idle: a dead head node).
mkdir -p {bin_dir} {cron_dir}
cat > {bin_dir}/lsstctl-queue-depth <<'LSSTCTL_PUBLISHER'
#!/bin/bash
set -euo pipefail
depth=$({depth_command})
aws cloudwatch put-metric-data --region {region} --namespace {namespace} --metric-name {metric} \
  --dimensions Cluster={cluster} --unit Count --value "$depth"
LSSTCTL_PUBLISHER
chmod 755 {bin_dir}/lsstctl-queue-depth
echo '* * * * * root {bin_dir}/lsstctl-queue-depth >/dev/null 2>&1' > {cron_dir}/lsstctl-queue-depth
"""


def render_publisher_install(*, cluster: str, region: str, node_root: str = "") -> str:
    """Install the queue-depth publisher (a script and its cron entry) on the head node.
    `node_root` prefixes system paths (the emulator keeps each head node in a directory)."""
    root = node_root.rstrip("/")
    # On AWS every job of the head node's Slurm is the cluster's. The emulator's one Slurm
    # serves every emulated head node: count only the jobs working under this node's root.
    depth_command = (
        f"squeue -h -t PENDING,RUNNING -o %Z | grep -c {shlex.quote('^' + root + '/')} || true"
        if root
        else "squeue -h -t PENDING,RUNNING -o %i | wc -l"
    )
    return PUBLISHER_TEMPLATE.format(
        depth_command=depth_command,
        bin_dir=shlex.quote(f"{root}/opt/lsstctl/bin"),
        cron_dir=shlex.quote(f"{root}/etc/cron.d"),
        region=shlex.quote(region),
        namespace=shlex.quote(queue_depth_namespace(cluster)),
        metric=QUEUE_DEPTH_METRIC,
        cluster=shlex.quote(cluster),
    )


# Before an idle teardown the control plane asks Slurm itself (lsstctl.services.idle): a head
# node whose publisher died while jobs ran must not be taken for idle. The question is an SSM
# document of its own (infra/control-plane.yaml, the emulator's bootstrap): the guard and the
# idle-alarm functions may run this fixed, read-only script on head nodes and nothing else.
# It counts pending and running jobs (on a shared emulator Slurm, only those working under
# this head node's root), puts back a lost cron entry of the publisher and runs it once, so
# the idle alarm has data again, and prints one JSON line.
QUEUE_PROBE_SCRIPT = r"""set -u
root='{{ nodeRoot }}'
if ! listed=$(squeue -h -t PENDING,RUNNING -o '%Z' 2>/dev/null); then
  echo '{"slurm": false}'
  exit 3
fi
if [ -n "$root" ]; then
  jobs=$(printf '%s\n' "$listed" | grep -c "^$root/" || true)
else
  jobs=$(printf '%s\n' "$listed" | grep -c . || true)
fi
publisher="$root/opt/lsstctl/bin/lsstctl-queue-depth"
cron="$root/etc/cron.d/lsstctl-queue-depth"
state=missing
if [ -x "$publisher" ]; then
  state=running
  if [ ! -f "$cron" ]; then
    echo "* * * * * root $publisher >/dev/null 2>&1" > "$cron" && state=restored
  fi
  "$publisher" >/dev/null 2>&1 || state=failing
fi
printf '{"slurm": true, "jobs": %d, "publisher": "%s"}\n' "$jobs" "$state"
"""


def _command_document(description: str, step: str, script: str, **parameters: dict[str, str]) -> dict[str, object]:
    """An SSM Command document (schema 2.2) running `script` on the head node, with the
    `nodeRoot` parameter every one of ours takes and `parameters` besides."""
    return {
        "schemaVersion": "2.2",
        "description": description,
        "parameters": {
            "nodeRoot": {
                "type": "String",
                "default": "",
                "allowedPattern": "^(/[A-Za-z0-9._/-]*)?$",
                "description": "Prefix of system paths (the local emulator's head nodes); empty on AWS.",
            },
            **parameters,
        },
        "mainSteps": [
            {
                "action": "aws:runShellScript",
                "name": step,
                "inputs": {"runCommand": script.splitlines(), "timeoutSeconds": "60"},
            }
        ],
    }


def queue_probe_document() -> dict[str, object]:
    """The SSM Command document that runs QUEUE_PROBE_SCRIPT."""
    return _command_document(
        "lsstctl: count pending and running Slurm jobs on a head node; keep its queue-depth publisher running.",
        "probe",
        QUEUE_PROBE_SCRIPT,
    )


@dataclass(frozen=True)
class QueueProbe:
    slurm: bool  # Slurm answered
    jobs: int = 0  # pending + running
    publisher: str = ""  # running | restored | failing | missing


def parse_queue_probe(stdout: str) -> QueueProbe:
    """The probe's last JSON line; anything else is no answer from Slurm."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("slurm") is True and isinstance(data.get("jobs"), int):
            return QueueProbe(slurm=True, jobs=data["jobs"], publisher=str(data.get("publisher", "")))
        break
    return QueueProbe(slurm=False)


def stack_dir(shared_dir: str, tag: str) -> str:
    """One directory per tag (a tag's rubin-env is its own): /shared/lsst_stack/<tag>."""
    return f"{shared_dir.rstrip('/')}/{STACK_SUBDIR}/{tag}"


def job_output_dir(shared_dir: str, job_id: str) -> str:
    return f"{shared_dir.rstrip('/')}/{OUTPUTS_SUBDIR}/{job_id}"


def demo_dir(shared_dir: str) -> str:
    return f"{shared_dir.rstrip('/')}/{DEMO_SUBDIR}"


def render_install_script(
    *,
    shared_dir: str,
    tag: str,
    installer_url: str,
    log_uri: str = "",
    timeout_seconds: int = 3 * 3600,
    retention_days: int = 30,
    demo_in: str | None = None,
    run_as: str = "root",
) -> str:
    """`shared_dir`: where stacks live (a cluster's shared storage, or the stack cache);
    `log_uri`: where the install log is copied (s3://...; empty: kept on the head node only);
    `demo_in`: the cluster's shared storage, where a demo Butler repository is made (owned by
    `run_as`, who runs the jobs); None: none."""
    demo = (
        DEMO_REPO_TEMPLATE.format(
            demo_dir=shlex.quote(demo_dir(demo_in)), inputs=DEMO_INPUTS, run_as=shlex.quote(run_as)
        )
        if demo_in
        else "demo_repo() { :; }\n"
    )
    return INSTALL_TEMPLATE.format(
        demo_repo=demo.rstrip("\n"),
        stack_dir=shlex.quote(stack_dir(shared_dir, tag)),
        tag=shlex.quote(tag),
        installer_url=shlex.quote(installer_url),
        log_uri=shlex.quote(log_uri),
        timeout_seconds=int(timeout_seconds),
        retention_days=int(retention_days),
        skipped=INSTALL_SKIPPED,
    )


def _pipeline_uri(pipeline: str, subset: str | None) -> str:
    return f"{pipeline}#{subset}" if subset else pipeline


def pipetask_argv(spec: JobSpec, graph: str) -> list[str]:
    """`pipetask run`, every value as --option=value (a value starting with "-" stays a
    value), the quantum graph saved to `graph` for the middleware's report."""
    assert spec.pipetask is not None
    p = spec.pipetask
    argv = [
        "pipetask",
        "run",
        f"--butler-config={p.butler}",
        f"--pipeline={_pipeline_uri(p.pipeline, p.subset)}",
        f"--output={p.output}",
        f"--processes={spec.cores}",
        f"--save-qgraph={graph}",
    ]
    argv += [f"--input={collection}" for collection in p.inputs]
    if p.data_query:
        argv.append(f"--data-query={p.data_query}")
    return argv + list(p.extra_args)


def bps_comment(job_id: str) -> str:
    """The Slurm comment of a job's pilots (ctrl_bps_parsl's own Slurm jobs), to find them."""
    return f"lsstctl-{job_id}"


# Keys of the submit YAML the product sets from a BpsSpec's fields; `config` may not set them.
BPS_RESERVED = frozenset({"pipelineYaml", "payload", "submitPath", "wmsServiceClass", "computeSite", "site"})


def render_bps_config(spec: JobSpec, *, job_id: str, out_dir: str) -> str:
    """The `bps submit` YAML: ctrl_bps_parsl's Slurm site (pilot jobs in the job's
    partition, marked with the job's comment), the pipeline and Butler from the spec, the
    rest of `config` as given. YAML written by a YAML library: data, never code."""
    import yaml

    assert spec.bps is not None
    b = spec.bps
    clash = sorted(BPS_RESERVED & set(b.config))
    if clash:
        raise ValueError(f"bps.config may not set {clash}: they come from the bps fields")
    payload: dict[str, object] = {
        "payloadName": b.payload_name,
        "butlerConfig": b.butler,
        "inCollection": ",".join(b.inputs),
        "dataQuery": b.data_query or "",
    }
    if b.output:
        payload["output"] = b.output
    options = [f"#SBATCH --comment={bps_comment(job_id)}"]
    if spec.queue:
        options.append(f"#SBATCH --partition={spec.queue}")
    hours, minutes = divmod(b.pilot_walltime_minutes, 60)
    config = {
        "project": "lsstctl",
        "campaign": spec.name,
        **b.config,
        "pipelineYaml": _pipeline_uri(b.pipeline, b.subset),
        "payload": payload,
        "submitPath": f"{out_dir}/submit/{{outputRun}}",
        "wmsServiceClass": "lsst.ctrl.bps.parsl.ParslService",
        "computeSite": "slurm",
        "site": {
            "slurm": {
                "class": "lsst.ctrl.bps.parsl.sites.Slurm",
                "nodes": b.pilot_nodes,
                "cores_per_node": b.cores_per_node,
                "walltime": f"{hours:02d}:{minutes:02d}:00",
                "scheduler_options": "\n".join(options),
            }
        },
    }
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


QUANTA_FILE = "quanta.json"
# The middleware's own count of a pipeline's quanta (`pipetask report` on the run's quantum
# graph), summed over its tasks into QUANTA_FILE: expected, succeeded, failed, blocked.
REPORT_QUANTA = r"""report_quanta() {
  local repo=$1 graph=$2
  if [ -z "$graph" ] || [ ! -f "$graph" ]; then
    echo "no quantum graph: no quanta to report" >&2
    return 0
  fi
  pipetask report --force-v2 --full-output-filename "$LSST_JOB_OUTPUT_DIR/pipetask-report.json" "$repo" "$graph" \
    >/dev/null || { echo "pipetask report failed" >&2; return 0; }
  python - "$LSST_JOB_OUTPUT_DIR/pipetask-report.json" "$LSST_JOB_OUTPUT_DIR/QUANTA_FILE" <<'LSSTCTL_QUANTA'
import json
import sys

tasks = json.load(open(sys.argv[1]))["tasks"].values()
names = {"expected": "n_expected", "succeeded": "n_successful", "failed": "n_failed", "blocked": "n_blocked"}
counts = {key: sum(int(task.get(name, 0)) for task in tasks) for key, name in names.items()}
json.dump(counts, open(sys.argv[2], "w"))
print("quanta:", json.dumps(counts))
LSSTCTL_QUANTA
}""".replace("QUANTA_FILE", QUANTA_FILE)
QUANTA_FAILED = r"""quanta_failed() {
  [ -f "$LSST_JOB_OUTPUT_DIR/QUANTA_FILE" ] || return 1
  # Failed, blocked, or never run (parsl's pilots lost): any quantum short of success.
  ! python -c 'import json, sys; q = json.load(open(sys.argv[1])); sys.exit(1 if q["succeeded"] < q["expected"] else 0)' \
    "$LSST_JOB_OUTPUT_DIR/QUANTA_FILE"
}""".replace("QUANTA_FILE", QUANTA_FILE)


# The user's values are quoted by shlex: a `$` in them is text, as meant.
QUOTED_DOLLARS = "# shellcheck disable=SC2016"


def _job_body(spec: JobSpec, *, job_id: str, out: str) -> list[str]:
    if spec.command is not None:
        return [spec.command]
    q_out = shlex.quote(out)
    if spec.pipetask is not None:
        graph = f"{out}/pipetask.qg"
        return [
            REPORT_QUANTA,
            "status=0",
            QUOTED_DOLLARS,
            f"{shlex.join(pipetask_argv(spec, graph))} || status=$?",
            QUOTED_DOLLARS,
            f"report_quanta {shlex.quote(spec.pipetask.butler)} {shlex.quote(graph)}",
            'exit "$status"',
        ]
    assert spec.bps is not None
    encoded = base64.b64encode(render_bps_config(spec, job_id=job_id, out_dir=out).encode()).decode()
    return [
        REPORT_QUANTA,
        QUANTA_FAILED,
        f"echo {encoded} | base64 -d > {q_out}/bps.yaml",
        *(
            []
            if spec.bps.exclusive_pilots
            else [
                "# parsl asks for whole nodes (--exclusive); this job holds a CPU of one, so on a queue of one",
                "# node its pilots would wait forever. Pilots take the CPUs they ask for and share nodes.",
                "export SBATCH_EXCLUSIVE=oversubscribe",
            ]
        ),
        "status=0",
        f"bps submit {q_out}/bps.yaml || status=$?",
        f"graph=$(find {q_out}/submit -name '*.qg' 2>/dev/null | head -n 1 || true)",
        QUOTED_DOLLARS,
        f'report_quanta {shlex.quote(spec.bps.butler)} "$graph"',
        "# parsl's pilots end CANCELLED whatever the quanta did: the middleware's report decides.",
        'if [ "$status" -eq 0 ] && quanta_failed; then status=1; fi',
        'exit "$status"',
    ]


def _seen_from_head_node(path: str, mount_dir: str, shared_dir: str) -> str:
    """A path on the cluster's shared storage (`mount_dir`, as users write it) as the head
    node sees it (`shared_dir`: the same on AWS; under the emulated node's root locally)."""
    mount = mount_dir.rstrip("/")
    if path == mount or path.startswith(mount + "/"):
        return shared_dir.rstrip("/") + path[len(mount) :]
    return path


def _mapped(spec: JobSpec, mount_dir: str | None, shared_dir: str) -> JobSpec:
    if not mount_dir:
        return spec
    kind = spec.pipetask or spec.bps
    if kind is None:
        return spec
    paths = {k: _seen_from_head_node(getattr(kind, k), mount_dir, shared_dir) for k in ("butler", "pipeline")}
    return spec.model_copy(update={"pipetask" if spec.pipetask else "bps": kind.model_copy(update=paths)})


def render_sbatch_script(
    spec: JobSpec,
    *,
    job_id: str,
    shared_dir: str,
    tag: str,
    stack_root: str | None = None,
    mount_dir: str | None = None,
) -> str:
    """The batch script. The job runs with the installed stack set up, in its own output
    directory under shared storage (which teardown archives to S3). Every value from the
    user is either validated to a plain form (names, numbers) or quoted by shlex. Paths on
    the shared storage (under `mount_dir`) are given as the head node sees them."""
    spec = _mapped(spec, mount_dir, shared_dir)
    out = job_output_dir(shared_dir, job_id)
    stack = shlex.quote(stack_dir(stack_root or shared_dir, tag))
    log = JOB_ARRAY_LOG if spec.array else JOB_LOG
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={spec.name}",
        f"#SBATCH --nodes={spec.nodes}",
        f"#SBATCH --ntasks={spec.ntasks}",
        f"#SBATCH --cpus-per-task={spec.cores}",
        f"#SBATCH --time={spec.walltime_minutes}",
        f"#SBATCH --output={out}/{log}",
        f"#SBATCH --chdir={out}",
        f"#SBATCH --comment={bps_comment(job_id)}",
    ]
    if spec.memory_mb:
        lines.append(f"#SBATCH --mem={spec.memory_mb}M")
    if spec.array:
        lines.append(f"#SBATCH --array={spec.array}")
    if spec.queue:
        lines.append(f"#SBATCH --partition={spec.queue}")
    lines += [
        "set -eo pipefail",
        f"export LSST_JOB_OUTPUT_DIR={shlex.quote(out)}",
        f"export LSST_SHARED_DIR={shlex.quote(shared_dir)}",
        f"if [ -f {stack}/loadLSST.bash ]; then",
        f"  touch {stack}/.last-used 2>/dev/null || true  # the stack cache's retention",
        "  # shellcheck source=/dev/null",
        f"  source {stack}/loadLSST.bash",
        "  setup lsst_distrib",
        "fi",
        *_job_body(spec, job_id=job_id, out=out),
    ]
    return "\n".join(lines) + "\n"


# The login user of each ParallelCluster OS: jobs run as that user, never as root (SSM
# commands themselves run as root on the head node).
OS_DEFAULT_USER = {
    "alinux2023": "ec2-user",
    "rhel9": "ec2-user",
    "rocky9": "rocky",
    "ubuntu2204": "ubuntu",
    "ubuntu2404": "ubuntu",
}


def render_submit_command(
    spec: JobSpec,
    *,
    job_id: str,
    shared_dir: str,
    tag: str,
    run_as: str = "root",
    stack_root: str | None = None,
    mount_dir: str | None = None,
) -> str:
    """Write the batch script next to the job's outputs and submit it as `run_as`; prints
    the Slurm id. Re-running it for the same job id returns the existing Slurm job, even
    when two deliveries run at once (a lock serialises them): one job, one Slurm job."""
    out = job_output_dir(shared_dir, job_id)
    script = render_sbatch_script(
        spec, job_id=job_id, shared_dir=shared_dir, tag=tag, stack_root=stack_root, mount_dir=mount_dir
    )
    # base64 carries any user text intact: no heredoc delimiter or quote can end it early.
    encoded = base64.b64encode(script.encode()).decode()
    q_out = shlex.quote(out)
    submit = "sbatch" if run_as == "root" else f"runuser -u {shlex.quote(run_as)} -- sbatch"
    return "\n".join(
        [
            "set -euo pipefail",
            f"mkdir -p {q_out}",
            *([] if run_as == "root" else [f"chown {shlex.quote(run_as)} {q_out}"]),
            f"exec 8>{q_out}/.submit.lock",
            "flock 8",
            f"if [ -s {q_out}/slurm_job_id ]; then cat {q_out}/slurm_job_id; exit 0; fi",
            f"echo {encoded} | base64 -d > {q_out}/job.sbatch",
            f"{submit} --parsable {q_out}/job.sbatch | cut -d';' -f1 > {q_out}/slurm_job_id.tmp",
            f"mv {q_out}/slurm_job_id.tmp {q_out}/slurm_job_id",
            f"cat {q_out}/slurm_job_id",
        ]
    )


# Slurm's record of one job (and of an array's tasks), from `squeue --json` (machine-readable
# output: no free text parsed), reduced on the head node to the fields the control plane
# keeps, with the quanta the job's report counted. squeue knows a job until MinJobAge after
# it ends; then `sacct --json` (where accounting is configured) still does.
JOB_STATUS_SCRIPT = r"""set -u
# shellcheck disable=SC2016  # the path is quoted by shlex: a `$` in it is text
python3 - JOB_ID QUANTA_PATH <<'LSSTCTL_JOB_STATUS'
import json
import subprocess
import sys

jid, quanta_file = sys.argv[1], sys.argv[2]
FIELDS = ("job_id", "array_job_id", "array_task_id", "job_state", "state", "exit_code", "derived_exit_code",
          "state_reason", "start_time", "end_time", "node_count", "cpus", "nodes", "partition", "time")
source, jobs = None, []
for argv in (["squeue", "--json"], ["sacct", "--json", "-X", "-j", jid]):
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        data = json.loads(run.stdout) if run.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        continue
    jobs = [{k: j.get(k) for k in FIELDS if k in j} for j in data.get("jobs", [])
            if jid in (str(j.get("job_id")), str(j.get("array_job_id")))]
    if jobs:
        source = argv[0]
        break
try:
    with open(quanta_file) as f:
        quanta = json.load(f)
except (OSError, ValueError):
    quanta = None
print(json.dumps({"source": source, "jobs": jobs, "quanta": quanta}))
LSSTCTL_JOB_STATUS
"""


def render_job_status_command(slurm_job_id: str, out_dir: str) -> str:
    if not slurm_job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {slurm_job_id!r}")
    quanta = shlex.quote(f"{out_dir.rstrip('/')}/{QUANTA_FILE}")
    return JOB_STATUS_SCRIPT.replace("JOB_ID", slurm_job_id, 1).replace("QUANTA_PATH", quanta, 1)


LOG_TAIL_MAX_LINES = 1000
LOG_LINE_MAX_CHARS = 500


def render_log_tail_command(out_dir: str, lines: int) -> str:
    """The last `lines` lines of a job's Slurm logs (one file, or one per task of an array,
    each under tail's own `==> file <==` header), long lines cut: SSM returns 24,000
    characters of output at most."""
    if not 1 <= lines <= LOG_TAIL_MAX_LINES:
        raise ValueError(f"lines must be 1 to {LOG_TAIL_MAX_LINES}")
    q_out = shlex.quote(out_dir)
    return "\n".join(
        [
            "set -u",
            f"cd {q_out} 2>/dev/null || {{ echo 'no output directory yet' >&2; exit 3; }}",
            "shopt -s nullglob",
            "logs=(slurm-*.out)",
            '[ "${#logs[@]}" -gt 0 ] || { echo "no log yet" >&2; exit 3; }',
            f'tail -q -n {lines} -- "${{logs[@]}}" | cut -c1-{LOG_LINE_MAX_CHARS} | tail -n {lines}',
        ]
    )


def render_cancel_command(slurm_job_id: str, job_id: str) -> str:
    """End one job (a no-op for a job already over): its Slurm job (every task of an array)
    and any Slurm job it started for itself (a bps workflow's pilots, by their comment)."""
    if not slurm_job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {slurm_job_id!r}")
    comment = shlex.quote(bps_comment(job_id))
    return "\n".join(
        [
            "set -u",
            f"scancel {slurm_job_id}",
            f"squeue -h -o '%i %k' | awk -v c={comment} '$2 == c {{ print $1 }}' | xargs -r scancel",
            "echo cancelled",
        ]
    )


def render_end_jobs_command(*, pending: list[str], running: list[str], signal: str = "TERM") -> str:
    """The graceful end of a cluster's jobs: hold its pending jobs (none starts any more) and
    signal its running ones, the batch script and every step (`scancel --full`), so they can
    save their work before compute stops. Only these jobs: the emulator's one Slurm serves
    every head node. A job that ended meanwhile is no error."""
    for jid in pending + running:
        if not jid.isdigit():
            raise ValueError(f"not a Slurm job id: {jid!r}")
    if not signal.isalnum():
        raise ValueError(f"not a signal name: {signal!r}")
    lines = []
    if pending:
        lines.append(f"scontrol hold {' '.join(pending)} || true")
    if running:
        lines.append(f"scancel --signal={signal} --full {' '.join(running)} || true")
    return "\n".join(lines + ["echo ended"])


def render_archive_command(*, shared_dir: str, bucket: str, prefix: str) -> str:
    """Copy job outputs to S3. Fails (non-zero) if the copy fails, so teardown keeps data."""
    src = f"{shared_dir.rstrip('/')}/{OUTPUTS_SUBDIR}"
    dest = f"s3://{bucket}/{prefix.strip('/')}/"
    return "\n".join(
        [
            "set -euo pipefail",
            f"mkdir -p {shlex.quote(src)}",
            f"aws s3 sync --only-show-errors {shlex.quote(src)} {shlex.quote(dest)}",
            f"echo archived {shlex.quote(src)} to {shlex.quote(dest)}",
        ]
    )


# Slurm's job states (base states; flags such as COMPLETING come after) as the product's.
SLURM_STATES = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending",
    "SUSPENDED": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "STAGE_OUT": "running",
    "SIGNALING": "running",
    "RESIZING": "running",
    "COMPLETED": "completed",
    "CANCELLED": "cancelled",
    "PREEMPTED": "cancelled",
    "REVOKED": "cancelled",
    "FAILED": "failed",
    "SPECIAL_EXIT": "failed",
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "node_fail",
    "OUT_OF_MEMORY": "out_of_memory",
}
# An array's state while its tasks differ: any still to run, else the worst ending.
_STATE_ORDER = ["running", "pending", "node_fail", "out_of_memory", "timeout", "failed", "cancelled", "completed"]


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says of a job (all of an array's tasks together)."""

    state: str
    slurm_state: str
    exit_code: str | None
    reason: str | None
    started_at: int | None  # epoch seconds
    ended_at: int | None
    node_count: int | None
    cpus: int | None
    nodes: str | None
    partition: str | None
    quanta: dict[str, int] | None
    source: str | None


def _number(value: object) -> int | None:
    """A Slurm JSON number: a plain int (v0.0.38, Slurm 22.05) or {"set", "number"} (later)."""
    if isinstance(value, dict):
        return int(value["number"]) if value.get("set", True) and "number" in value else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _state_name(job: dict[str, object]) -> str:
    raw = job.get("job_state", job.get("state"))
    if isinstance(raw, dict):  # sacct: {"current": [...], "reason": ...}
        raw = raw.get("current")
    if isinstance(raw, list):  # Slurm 23.02 on: ["COMPLETED", flags...]
        raw = raw[0] if raw else ""
    return str(raw or "").split()[0] if raw else ""


def _exit_code(job: dict[str, object]) -> str | None:
    """Slurm's form, "code:signal"."""
    raw = job.get("exit_code")
    if isinstance(raw, dict):  # later versions: {"status": [...], "return_code": N, "signal": {...}}
        code = _number(raw.get("return_code"))
        signal = raw.get("signal")
        sig = _number(signal.get("id")) if isinstance(signal, dict) else None
        return None if code is None else f"{code}:{sig or 0}"
    status = _number(raw)
    if status is None:
        return None
    # v0.0.38: the wait status (exit code << 8 | signal).
    return f"{(status >> 8) & 0xFF}:{status & 0x7F}"


def parse_job_status(output: str) -> SlurmJob | None:
    """render_job_status_command's output; None when Slurm no longer (or not yet) knows it."""
    text = output.strip().splitlines()[-1] if output.strip() else ""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ValueError(f"unrecognised job status: {output.strip()[:200]!r}") from error
    jobs = data.get("jobs") or []
    if not jobs:
        return None
    states = []
    for job in jobs:
        name = _state_name(job)
        if name not in SLURM_STATES:
            raise ValueError(f"unrecognised Slurm job state: {name!r}")
        states.append((SLURM_STATES[name], name, job))
    state, slurm_state, worst = min(states, key=lambda s: _STATE_ORDER.index(s[0]))
    starts = [t for t in (_number(j.get("start_time")) for j in jobs) if t]
    ends = [t for t in (_number(j.get("end_time")) for j in jobs) if t]
    done = state not in {"pending", "running"}
    quanta = data.get("quanta")
    return SlurmJob(
        state=state,
        slurm_state=slurm_state,
        exit_code=_exit_code(worst),
        reason=str(worst.get("state_reason")) if worst.get("state_reason") not in (None, "", "None") else None,
        started_at=min(starts) if starts and state != "pending" else None,
        ended_at=max(ends) if ends and done else None,
        node_count=_number(worst.get("node_count")),
        cpus=_number(worst.get("cpus")),
        nodes=str(worst["nodes"]) if worst.get("nodes") else None,
        partition=str(worst["partition"]) if worst.get("partition") else None,
        quanta={k: int(quanta.get(k, 0)) for k in ("expected", "succeeded", "failed", "blocked")}
        if isinstance(quanta, dict)
        else None,
        source=data.get("source"),
    )


# The scale governor's hand on the head node (lsstctl.domain.governor): per queue, keep the
# first N of ParallelCluster's nodes (`<queue>-st-*` static, `<queue>-dy-*` dynamic) available
# and drain the rest, so Slurm powers up no node above the cap and pending jobs wait. Billing
# nodes (not powered down: no `~` in their state) come first, then static before dynamic, by
# number: a queue never reaches more than max(cap, nodes billing now). Nodes drained with this
# reason are resumed when the cap rises; nodes drained for any other reason (an admin's,
# ParallelCluster's health checks) and static nodes are never touched. The caps are also kept
# in NODE_CAP_DIR, where the local emulator's stand-in for clustermgtd reads them.
NODE_CAP_DIR = "/etc/lsstctl/node-caps"
NODE_CAP_REASON = "lsstctl budget cap"
NODE_CAP_SCRIPT = r"""set -u
root='{{ nodeRoot }}'
caps='{{ caps }}'
reason='%(reason)s'
dir="$root%(dir)s"
mkdir -p "$dir"
drained=0
resumed=0
for pair in $caps; do
  queue=${pair%%%%=*}
  cap=${pair#*=}
  printf '%%s\n' "$cap" > "$dir/$queue"
  listing=$(sinfo -h -N -p "$queue" -o '%%N %%t %%E' 2>/dev/null | sort -u) || listing=''
  ordered=$(printf '%%s\n' "$listing" | awk -v q="$queue" '
    index($1, q "-st-") == 1 || index($1, q "-dy-") == 1 {
      print (($2 ~ /~/) ? 1 : 0), ((index($1, q "-st-") == 1) ? 0 : 1), $0 }' |
    sort -k1,1n -k2,2n -k3,3V | cut -d' ' -f3-)
  drain=''
  resume=''
  i=0
  while read -r node state why; do
    [ -n "$node" ] || continue
    i=$((i + 1))
    if [ "$i" -gt "$cap" ] && [ "${node#"$queue"-st-}" = "$node" ]; then
      case "$state" in
        drain*|drng*) ;;
        *) drain="$drain${drain:+,}$node"; drained=$((drained + 1)) ;;
      esac
    elif [ "$i" -le "$cap" ] && [ "$why" = "$reason" ]; then
      resume="$resume${resume:+,}$node"; resumed=$((resumed + 1))
    fi
  done <<EOF
$ordered
EOF
  if [ -n "$drain" ]; then
    scontrol update nodename="$drain" state=DRAIN reason="$reason" || exit 4
  fi
  if [ -n "$resume" ]; then
    scontrol update nodename="$resume" state=RESUME || exit 4
  fi
done
printf '{"applied": true, "drained": %%d, "resumed": %%d}\n' "$drained" "$resumed"
""" % {"reason": NODE_CAP_REASON, "dir": NODE_CAP_DIR}  # noqa: UP031 (a shell script full of braces)
NODE_CAPS_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}=[0-9]{1,4}( [a-z0-9][a-z0-9-]{0,63}=[0-9]{1,4}){0,9}$"


def node_cap_document() -> dict[str, object]:
    """The SSM Command document that runs NODE_CAP_SCRIPT."""
    return _command_document(
        "lsstctl: cap the compute nodes each Slurm queue may reach (drain the nodes above the cap, resume them when it rises).",
        "cap",
        NODE_CAP_SCRIPT,
        caps={
            "type": "String",
            "allowedPattern": NODE_CAPS_PATTERN,
            "description": "queue=nodes pairs, space separated (e.g. 'compute=3 gpu=0').",
        },
    )


def render_caps(caps: dict[str, int]) -> str:
    """The document's `caps` parameter."""
    return " ".join(f"{queue}={count}" for queue, count in sorted(caps.items()))


def node_cap_applied(stdout: str) -> bool:
    """Whether the script ran to its end (its last JSON line says so)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            return False
        return isinstance(data, dict) and data.get("applied") is True
    return False
