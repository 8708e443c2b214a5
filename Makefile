# The two set-up commands: `make demo` (the main job) and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.quantplug-installed
PLUGIN_DISTS := $(wildcard plugins/*/pyproject.toml)

.PHONY: install demo test lint typecheck bench soak clean

$(STAMP): pyproject.toml $(PLUGIN_DISTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach p,$(dir $(PLUGIN_DISTS)),-e ./$(p))
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/quantplug demo

lint: install
	$(BIN)/ruff check quantplug tests plugins loadtests scripts

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/quantplug bench --output bench-results
	$(BIN)/quantplug bench --zoo --output bench-results

# 10 minutes at saturation on an INT8 model with malformed requests mixed in (not part of `make test`)
soak: install
	$(BIN)/quantplug soak --minutes 10 --output soak-results

clean:
	rm -rf $(VENV) model_repository/* .quantplug-cache bench-results soak-results
