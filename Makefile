# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
RUBIN_VENV ?= .venv-rubin
RUBIN_STAMP := $(RUBIN_VENV)/.installed
SYSTEM_STAMP := .emulator/.system-packages

.PHONY: deps demo serve lint test package deploy destroy bench bench-cost bench-faults bench-perf bench-load clean

deps: $(STAMP) $(TOOLS_STAMP) $(RUBIN_STAMP) $(SYSTEM_STAMP)

$(STAMP): requirements.txt requirements-cli.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# checkov, the templates' security scanner, in its own virtualenv (its pins conflict with ours).
$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	touch $(TOOLS_STAMP)

# Rubin's middleware from PyPI (pipetask, bps, butler): the emulator's stack, installed once
# here; every emulated cluster's stack links to it (lsstctl/emulator/standin/lsstinstall).
$(RUBIN_STAMP): requirements-rubin.txt
	$(PYTHON) -m venv $(RUBIN_VENV)
	$(RUBIN_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-rubin.txt
	touch $(RUBIN_STAMP)

# Slurm, munge and curl: the head node's tools, which the emulator runs on this machine.
$(SYSTEM_STAMP): scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	mkdir -p $(dir $(SYSTEM_STAMP)) && touch $(SYSTEM_STAMP)

demo: deps
	$(PY) -m lsstctl.emulator demo

serve: deps
	$(PY) -m lsstctl.emulator serve --port 8000

# Lint first (ruff, ruff format, mypy: pyproject.toml). Unit/integration/infra tests use moto
# in-process; workflow and e2e tests share one emulator (moto server + Slurm), so they run in
# their own pytest process.
lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: deps lint
	$(PY) -m pytest -q tests/unit tests/integration tests/infra
	$(PY) -m pytest -q tests/workflows tests/e2e

# The Lambda artifacts (build/package/): the code zip (no emulator), the pinned dependencies
# layer and ParallelCluster's layer for python3.12 x86_64, reproducible, sizes against
# Lambda's limits (scripts/package.py). Needs the package index, nothing else.
package: deps
	$(PY) scripts/package.py

# Deploy (or upgrade) the control plane into the account and region of the environment
# (AWS_PROFILE / AWS_REGION): shows the change set, asks, executes, prints the API's URL.
# First deploy: CLUSTER_SUBNET_ID=subnet-... ; optional STAGE, BUDGET_USD, ALERT_EMAIL,
# ADMIN_PRINCIPALS (full ARNs), KEY_NAME, NODEJS_LAYER_ARN, YES=1 (no question).
deploy: package
	$(PY) scripts/deploy.py deploy $(if $(STAGE),--stage "$(STAGE)") $(if $(YES),--yes) \
	  $(if $(CLUSTER_SUBNET_ID),--subnet "$(CLUSTER_SUBNET_ID)") $(if $(BUDGET_USD),--budget "$(BUDGET_USD)") \
	  $(if $(ALERT_EMAIL),--alert-email "$(ALERT_EMAIL)") $(if $(ADMIN_PRINCIPALS),--admins "$(ADMIN_PRINCIPALS)") \
	  $(if $(KEY_NAME),--key-name "$(KEY_NAME)") $(if $(NODEJS_LAYER_ARN),--nodejs-layer "$(NODEJS_LAYER_ARN)")

# Remove it: refuses while clusters may bill unless TEARDOWN_CLUSTERS=1; keeps the state
# table, the archive and its access logs unless DELETE_DATA=1.
destroy: deps
	$(PY) scripts/deploy.py destroy $(if $(STAGE),--stage "$(STAGE)") $(if $(YES),--yes) \
	  $(if $(TEARDOWN_CLUSTERS),--teardown-clusters) $(if $(DELETE_DATA),--delete-data)

clean:
	rm -rf $(VENV) $(TOOLS_VENV) $(RUBIN_VENV) .emulator build

# The cost simulation (issue: bounded spend): many clusters on the emulator, hours in minutes.
bench-cost: deps
	$(PY) bench/cost_simulation.py

# The fault campaign (issue: AWS's bad days): lifecycles through the API while AWS calls
# fail, in both modes, then an audit of everything left. LIFECYCLES=20 for a quick look.
bench-faults: deps
	$(PY) bench/fault_campaign.py

# Cold starts (issue: a lean control plane): each handler's import against bare boto3's.
bench-perf: deps
	$(PY) bench/perf.py

# Many clusters at once against serve (OWNERS x CLUSTERS, default 5 x 10).
bench-load: deps
	$(PY) bench/load.py --owners $(or $(OWNERS),5) --clusters $(or $(CLUSTERS),10)

bench: bench-cost bench-faults bench-perf
