# The two commands a new user runs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak man deb test-systemd clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "rrd needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $@

# The example config runs `python3 examples/ticker_app.py`: the venv's python3 comes first.
run: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/rrd serve -c etc/rrd/rr.yaml

# The bench smoke test runs the peers too, so that their code cannot rot either.
PEERS := bench/.peers/.installed
$(PEERS): | $(STAMP)
	$(PY) -c 'import sys; sys.path.insert(0, "bench"); import peers; peers.install()'

test: $(STAMP) $(PEERS)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check rrd tests bench examples tools
	$(VENV)/bin/ruff format --check rrd tests bench examples tools
	$(VENV)/bin/mypy

# Every bench, one at a time, as one markdown table, also written to bench/results.md; the
# peers (supervisord, circus) are installed into bench/.peers from PyPI first. About 35 minutes.
# `make bench BENCH_ARGS="--only exec ticker"` for some; `--smoke` for a quick look.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

# rrd under chaos workers and a driver that signals, rewrites, scales and pokes it; then checks
# it is whole and prints the figures. 10 minutes; `make soak SOAK_SECONDS=60` for less.
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS)

# The man pages are generated from the click commands and the config schema, and committed.
man: $(STAMP)
	$(PY) tools/man.py man

# dist/rrd_<version>_all.deb, built in a Debian 13 root (trixie's debhelper, dh-python and
# Python), then checked by lintian; needs root.
deb:
	bash tools/make-deb.sh

# rrd under a real systemd (257, in a Debian 13 root booted with systemd-nspawn): the package of
# `make deb` installed with apt into a fresh root, then started, reloaded, crashed, upgraded,
# removed and purged; needs root.
test-systemd: $(STAMP)
	bash tests/systemd/run.sh

clean:
	rm -rf $(VENV) bench/.peers build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
