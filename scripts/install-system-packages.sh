#!/usr/bin/env bash
# Install the system packages the offline emulator needs to run a real
# single-node Slurm on this machine (it plays the cluster head node), and shellcheck,
# which `make test` runs over every shell script the product ships or generates.
# Idempotent: does nothing when every required command is already present.
# Safe for CI: runs non-interactively, reads nothing from stdin.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

required=(slurmctld slurmd sbatch munged curl flock shellcheck)
packages=(slurmctld slurmd slurm-client munge curl util-linux shellcheck)

missing=()
for cmd in "${required[@]}"; do
    # munged and the Slurm daemons live in /usr/sbin, which may be off PATH.
    if ! command -v "$cmd" >/dev/null 2>&1 \
        && [[ ! -x "/usr/sbin/$cmd" && ! -x "/sbin/$cmd" ]]; then
        missing+=("$cmd")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-packages: all required commands present (${required[*]}); nothing to do"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-system-packages: missing ${missing[*]} and not root (no sudo)" >&2
        exit 1
    fi
else
    SUDO=()
fi

"${SUDO[@]}" apt-get update -qq </dev/null >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${packages[@]}" </dev/null >/dev/null
echo "install-system-packages: missing ${missing[*]}; installed ${packages[*]} via apt-get"
