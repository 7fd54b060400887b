# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench man test-systemd clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "rrd needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $@

# The example config runs `python3 examples/ticker_app.py`: the venv's python3 comes first.
run: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/rrd serve -c etc/rrd/rr.yaml

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check rrd tests bench examples tools
	$(VENV)/bin/ruff format --check rrd tests bench examples tools
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/codec.py

# The man pages are generated from the click commands and the config schema, and committed.
man: $(STAMP)
	$(PY) tools/man.py man

# rrd under a real systemd (257, in a Debian 13 root booted with systemd-nspawn); needs root.
test-systemd: $(STAMP)
	bash tests/systemd/run.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
