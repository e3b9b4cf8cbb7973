# netwarden developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export NETWARDEN_DATA ?= $(abspath ../shared/data)

.PHONY: venv sysdeps test bench demo clean

venv: $(VENV)/.installed

# torch==2.13.0 first: that pin is the CPU build; anything else would pull a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt requirements-dev.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# System packages (root, Debian/Ubuntu): iproute2 for the live-capture test's network namespaces, libpcap
# for compiling BPF filter expressions (scapy loads it with ctypes; libpcap0.8t64 on Debian 13 / Ubuntu 24.04),
# tshark for the pyshark source and its tests.
sysdeps:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	ldconfig -p | grep -q 'libpcap\.so' || missing="$$missing libpcap"; \
	command -v tshark >/dev/null 2>&1 || missing="$$missing tshark"; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && \
	  for pkg in $$missing; do \
	    if [ $$pkg = libpcap ]; then apt-get install -y -qq libpcap0.8 || apt-get install -y -qq libpcap0.8t64; \
	    else DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null; fi || exit 1; \
	  done; \
	fi

test: venv sysdeps
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/run_all.py

demo: venv
	$(BIN)/python -m sensor.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
