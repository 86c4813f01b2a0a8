# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SYSDEPS := $(VENV)/.sysdeps-stamp
VVENV   ?= .venv-vllm
VSTAMP  := $(VVENV)/.installed-stamp

.PHONY: setup vllm-setup sysdeps proto proto-check test demo demo-vllm smoke bench bench-vllm clean

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

# The same comparison on real vLLM servers (CPU build, ChainfsConnector), the tiny model built locally.
VLLM_MODEL ?= demo-vllm-report/model
demo-vllm: setup vllm-setup
	@test -f $(VLLM_MODEL)/config.json || $(VVENV)/bin/chainfs model build-tiny $(VLLM_MODEL)
	$(VVENV)/bin/chainfs loadtest run --engine vllm --model-dir $(VLLM_MODEL) --sessions 50 --length-scale 16 \
		--block-tokens 32 --report-dir demo-vllm-report --json demo-vllm-report/report.json

# A quick look at the file system alone: a local cluster, a 64 MiB file written and read back.
smoke: setup
	$(PY) scripts/demo.py

bench: setup
	$(VENV)/bin/chainfs bench io

# TTFT with the prefix from chainfs vs vLLM's own memory vs cold, on the ~120 M model (~5 min).
bench-vllm: vllm-setup
	$(VVENV)/bin/python bench/bench_vllm.py

clean:
	rm -rf $(VENV) $(VVENV) build *.egg-info
