# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
SYSTEM_STAMP := .emulator/.system-packages

.PHONY: deps demo serve test package bench bench-cost bench-faults clean

deps: $(STAMP) $(TOOLS_STAMP) $(SYSTEM_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# checkov, the templates' security scanner, in its own virtualenv (its pins conflict with ours).
$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	touch $(TOOLS_STAMP)

# Slurm, munge and curl: the head node's tools, which the emulator runs on this machine.
$(SYSTEM_STAMP): scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	mkdir -p $(dir $(SYSTEM_STAMP)) && touch $(SYSTEM_STAMP)

demo: deps
	$(PY) -m lsstctl.emulator demo

serve: deps
	$(PY) -m lsstctl.emulator serve --port 8000

# Unit/integration/infra tests use moto in-process; workflow and e2e tests share one
# emulator (moto server + Slurm), so they run in their own pytest process.
test: deps
	$(PY) -m pytest -q tests/unit tests/integration tests/infra
	$(PY) -m pytest -q tests/workflows tests/e2e

# The Lambda artifacts (build/package/): the code zip (no emulator), the pinned dependencies
# layer and ParallelCluster's layer for python3.12 x86_64, reproducible, sizes against
# Lambda's limits (scripts/package.py). Needs the package index, nothing else.
package: deps
	$(PY) scripts/package.py

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .emulator build

# The cost simulation (issue: bounded spend): many clusters on the emulator, hours in minutes.
bench-cost: deps
	$(PY) bench/cost_simulation.py

# The fault campaign (issue: AWS's bad days): lifecycles through the API while AWS calls
# fail, in both modes, then an audit of everything left. LIFECYCLES=20 for a quick look.
bench-faults: deps
	$(PY) bench/fault_campaign.py

bench: bench-cost bench-faults
