# The two commands of the README: `make test` (everything CI runs) and `make demo` (the main job).
# Both create .venv and build the cluster binaries into ~/.cache/reconciler on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: test demo lint typecheck unit toolchain venv clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests benchmarks
	$(BIN)/ruff format --check reconciler tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict reconciler

toolchain: $(STAMP)
	$(BIN)/reconciler dev-cluster build

unit: $(STAMP)
	$(BIN)/pytest tests/unit

test: lint typecheck toolchain
	$(BIN)/pytest

# Until the daemon lands, the main job starts the local cluster and says how to use it.
demo: toolchain
	@$(BIN)/reconciler dev-cluster up --name demo >/dev/null
	@echo
	@echo "Local cluster 'demo' is running (Kubernetes $$($(BIN)/kubectl version -o json --kubeconfig $$($(BIN)/reconciler dev-cluster kubeconfig --name demo) | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))."
	@echo "  export KUBECONFIG=$$($(BIN)/reconciler dev-cluster kubeconfig --name demo)"
	@echo "  $(BIN)/kubectl get nodes"
	@echo "  $(BIN)/reconciler dev-cluster status"
	@echo "  $(BIN)/reconciler dev-cluster down --name demo     # stops every process and removes its files"

clean-venv:
	rm -rf $(VENV)
