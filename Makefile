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

# The main job: local cluster + local Git server of environments/ + the daemon syncing it (Ctrl-C stops).
demo: toolchain
	$(BIN)/python -m reconciler.devcluster.demo

clean-venv:
	rm -rf $(VENV)
