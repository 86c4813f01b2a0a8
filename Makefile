# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SYSDEPS := $(VENV)/.sysdeps-stamp

.PHONY: setup sysdeps proto proto-check test test-fast demo bench clean

$(SYSDEPS):
	@$(PYTHON) -m venv $(VENV)
	@bash scripts/install_sysdeps.sh
	@touch $@

$(STAMP): pyproject.toml $(SYSDEPS)
	@$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

setup: $(STAMP)

proto: setup
	$(PY) scripts/gen_proto.py

proto-check: setup
	$(PY) scripts/gen_proto.py --check

test: setup proto-check
	$(PY) -m pytest -q -ra

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) bench/bench_io.py

clean:
	rm -rf $(VENV) build *.egg-info
