# netwarden developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export NETWARDEN_DATA ?= $(abspath ../shared/data)

.PHONY: venv test bench demo clean

venv: $(VENV)/.installed

# torch==2.13.0 first: that pin is the CPU build; anything else would pull a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt requirements-dev.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/run_all.py

demo: venv
	$(BIN)/python -m sensor.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
