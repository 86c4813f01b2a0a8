# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SYSDEPS := $(VENV)/.sysdeps-stamp
VVENV   ?= .venv-vllm
VSTAMP  := $(VVENV)/.installed-stamp

.PHONY: setup vllm-setup sysdeps proto proto-check test demo demo-vllm smoke bench clean

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

# vLLM's CPU build and chainfs in a venv of their own (~3.5 GB, ~3 min): the vLLM tests and demo.
$(VSTAMP): pyproject.toml scripts/setup_vllm_venv.sh
	bash scripts/setup_vllm_venv.sh $(VVENV) $(PYTHON)
	@touch $@

vllm-setup: $(VSTAMP)

proto: setup
	$(PY) scripts/gen_proto.py

proto-check: setup
	$(PY) scripts/gen_proto.py --check

test: setup proto-check vllm-setup
	CHAINFS_REQUIRE_VLLM=1 CHAINFS_VLLM_PYTHON=$(abspath $(VVENV))/bin/python $(PY) -m pytest -q -ra

# The main job: no cache vs local caches vs one shared chainfs cache, on real engines (~3 min).
demo: setup
	$(VENV)/bin/chainfs loadtest run --model small --sessions 50 --length-scale 16 --block-tokens 32 \
		--report-dir demo-report --json demo-report/report.json

# A quick look at the file system alone: a local cluster, a 64 MiB file written and read back.
smoke: setup
	$(PY) scripts/demo.py

bench: setup
	$(VENV)/bin/chainfs bench io

clean:
	rm -rf $(VENV) $(VVENV) build *.egg-info
