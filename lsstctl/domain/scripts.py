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
if [ -f loadLSST.bash ]; then
  set +u  # loadLSST reads unset variables
  # shellcheck source=/dev/null
  source loadLSST.bash
  set -u
  if [ -n "$(eups list -t "$TAG" lsst_distrib 2>/dev/null)" ]; then
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
echo "lsst_distrib $TAG installed in $STACK_DIR"
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
    depth_command = (f"squeue -h -t PENDING,RUNNING -o %Z | grep -c {shlex.quote('^' + root + '/')} || true" if root
                     else "squeue -h -t PENDING,RUNNING -o %i | wc -l")
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
            "nodeRoot": {"type": "String", "default": "", "allowedPattern": "^(/[A-Za-z0-9._/-]*)?$",
                         "description": "Prefix of system paths (the local emulator's head nodes); empty on AWS."},
            **parameters,
        },
        "mainSteps": [{"action": "aws:runShellScript", "name": step,
                       "inputs": {"runCommand": script.splitlines(), "timeoutSeconds": "60"}}],
    }


def queue_probe_document() -> dict[str, object]:
    """The SSM Command document that runs QUEUE_PROBE_SCRIPT."""
    return _command_document(
        "lsstctl: count pending and running Slurm jobs on a head node; keep its queue-depth publisher running.",
        "probe", QUEUE_PROBE_SCRIPT)


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


def render_install_script(*, shared_dir: str, tag: str, installer_url: str, log_uri: str = "",
                          timeout_seconds: int = 3 * 3600, retention_days: int = 30) -> str:
    """`shared_dir`: where stacks live (a cluster's shared storage, or the stack cache);
    `log_uri`: where the install log is copied (s3://...; empty: kept on the head node only)."""
    return INSTALL_TEMPLATE.format(
        stack_dir=shlex.quote(stack_dir(shared_dir, tag)),
        tag=shlex.quote(tag),
        installer_url=shlex.quote(installer_url),
        log_uri=shlex.quote(log_uri),
        timeout_seconds=int(timeout_seconds),
        retention_days=int(retention_days),
        skipped=INSTALL_SKIPPED,
    )


def job_command(spec: JobSpec) -> str:
    if spec.command is not None:
        return spec.command
    assert spec.pipetask is not None
    p = spec.pipetask
    argv = ["pipetask", "run", "-b", p.butler, "-p", p.pipeline, "-o", p.output, "-j", str(spec.cores)]
    for collection in p.inputs:
        argv += ["-i", collection]
    if p.data_query:
        argv += ["-d", p.data_query]
    argv += p.extra_args
    return shlex.join(argv)


def render_sbatch_script(spec: JobSpec, *, job_id: str, shared_dir: str, tag: str, stack_root: str | None = None) -> str:
    """The batch script. The job runs with the installed stack set up, in its own
    output directory under shared storage (which teardown archives to S3)."""
    out = job_output_dir(shared_dir, job_id)
    stack = shlex.quote(stack_dir(stack_root or shared_dir, tag))
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={spec.name}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={spec.cores}",
        f"#SBATCH --time={spec.walltime_minutes}",
        f"#SBATCH --output={out}/{JOB_LOG}",
        f"#SBATCH --chdir={out}",
    ]
    if spec.queue:
        lines.append(f"#SBATCH --partition={spec.queue}")
    lines += [
        "set -eo pipefail",
        f"export LSST_JOB_OUTPUT_DIR={shlex.quote(out)}",
        f"if [ -f {stack}/loadLSST.bash ]; then",
        f"  touch {stack}/.last-used 2>/dev/null || true  # the stack cache's retention",
        "  # shellcheck source=/dev/null",
        f"  source {stack}/loadLSST.bash",
        "  setup lsst_distrib",
        "fi",
        # A pipetask's values are quoted by shlex: a `$` in them is text, as meant.
        *(["# shellcheck disable=SC2016"] if spec.pipetask is not None else []),
        job_command(spec),
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


def render_submit_command(spec: JobSpec, *, job_id: str, shared_dir: str, tag: str, run_as: str = "root",
                          stack_root: str | None = None) -> str:
    """Write the batch script next to the job's outputs and submit it as `run_as`; prints
    the Slurm id. Re-running it for the same job id returns the existing Slurm job, even
    when two deliveries run at once (a lock serialises them): one job, one Slurm job."""
    out = job_output_dir(shared_dir, job_id)
    script = render_sbatch_script(spec, job_id=job_id, shared_dir=shared_dir, tag=tag, stack_root=stack_root)
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


def render_job_status_command(slurm_job_id: str) -> str:
    jid = shlex.quote(slurm_job_id)
    # scontrol knows the job until MinJobAge after it ends; sacct (when accounting is
    # configured) covers older jobs.
    return (
        f"scontrol show job -o {jid} 2>/dev/null | grep -o 'JobState=[A-Z_]* .*ExitCode=[0-9:]*' "
        f"|| sacct -n -P -X -j {jid} -o State,ExitCode | head -1 | sed 's/^/SACCT=/'"
    )


def render_cancel_command(slurm_job_id: str) -> str:
    """End one Slurm job (a no-op for a job already over)."""
    if not slurm_job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {slurm_job_id!r}")
    return f"scancel {slurm_job_id}"


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


SLURM_STATES = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "RESV_DEL_HOLD": "pending",
    "SUSPENDED": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "STAGE_OUT": "running",
    "COMPLETED": "completed",
    "CANCELLED": "cancelled",
    "PREEMPTED": "cancelled",
    "FAILED": "failed",
    "TIMEOUT": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
}


def parse_job_status(output: str) -> tuple[str, str | None, str]:
    """Parse render_job_status_command's output into (state, exit_code, slurm_state)."""
    text = output.strip()
    if text.startswith("SACCT="):
        fields = text[len("SACCT="):].split("|")
        slurm_state = fields[0].split()[0] if fields and fields[0] else ""
        exit_code = fields[1] if len(fields) > 1 else None
    else:
        slurm_state, exit_code = "", None
        for token in text.split():
            if token.startswith("JobState="):
                slurm_state = token.split("=", 1)[1]
            elif token.startswith("ExitCode="):
                exit_code = token.split("=", 1)[1]
    if slurm_state not in SLURM_STATES:
        raise ValueError(f"unrecognised Slurm job status: {text[:200]!r}")
    return SLURM_STATES[slurm_state], exit_code, slurm_state


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
""" % {"reason": NODE_CAP_REASON, "dir": NODE_CAP_DIR}
NODE_CAPS_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}=[0-9]{1,4}( [a-z0-9][a-z0-9-]{0,63}=[0-9]{1,4}){0,9}$"


def node_cap_document() -> dict[str, object]:
    """The SSM Command document that runs NODE_CAP_SCRIPT."""
    return _command_document(
        "lsstctl: cap the compute nodes each Slurm queue may reach (drain the nodes above the cap, resume them when it rises).",
        "cap", NODE_CAP_SCRIPT,
        caps={"type": "String", "allowedPattern": NODE_CAPS_PATTERN,
              "description": "queue=nodes pairs, space separated (e.g. 'compute=3 gpu=0')."})


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
