# The only entry points a human needs: demo, test, lint, bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test lint typecheck unit dev-build demo chart-lint serve-sample bench crd clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall only when a dependency list changes (editable installs pick up code changes).
# Two distributions: the product (ortkube) and the developers' tools (devtools/: the dev
# control plane, the podrunner, the demo; they add `ortkube dev` and `ortkube demo`).
$(STAMP): pyproject.toml devtools/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q -e devtools
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The dev control plane's upstream binaries: built once (minutes), then reused from
# ~/.cache/ortkube (docs/dev-control-plane.md).
dev-build: $(STAMP)
	$(BIN)/ortkube dev build

test: lint typecheck dev-build
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# The dev control plane, the Helm chart, the operator and one served model, called once
# (minutes once the binaries are cached). `.venv/bin/ortkube demo --down` tears it all down.
demo: dev-build
	$(BIN)/ortkube demo

# What ships: the chart (helm lint --strict, the dev cache's helm) and the Dockerfile (hadolint).
chart-lint: dev-build
	"$$($(BIN)/python -c 'from ortkube.devcluster.paths import bin_dir; print(bin_dir())')/helm" lint --strict charts/ortkube
	$(BIN)/hadolint Dockerfile

# The runtime alone: serve the bundled sample model and send one inference.
serve-sample: $(STAMP)
	$(BIN)/python examples/serve_sample.py

bench: $(STAMP)
	$(BIN)/python bench/serve_vs_inprocess.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
