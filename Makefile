# Two entry points (README): `make repro` runs the whole study, `make test` runs the tests.
# Both create .venv on first use; nothing else needs installing by hand. `make demo` serves the browser demo.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test test-fast verify tune objectives demo clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt  # every package at the committed study's version: the same bytes
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,demo,dashboard,controlnet]'
	touch $(STAMP)

repro: $(STAMP)  # the whole study, stage by stage with progress and an ETA; killed, it goes on where it stopped
	$(BIN)/linebridge data fetch
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/linebridge repro

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  # all but the tests marked slow (servers, browser, torchrun, Optuna studies, dvc repro): for edit-test loops
	$(BIN)/python -m pytest -q -m "not slow"

verify: $(STAMP)  # re-score the released weights (weights/linebridge.safetensors) on the test protocols
	$(BIN)/linebridge data fetch
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro prepare
	$(BIN)/linebridge verify

tune: $(STAMP)  # the Optuna study: not a DVC stage (it outlasts the study's budget); commit what it writes
	$(BIN)/linebridge tune

objectives: $(STAMP)  # grad / noise / ysubx at equal budget (~20 min): not a DVC stage; commit what it writes
	$(BIN)/linebridge objectives

demo: $(STAMP)  # setup installs the demo extra; e.g. make demo DEMO_ARGS='--port 8000'
	$(BIN)/linebridge demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
