#!/usr/bin/env bash
# The venv of the vLLM integration (.venv-vllm): vLLM's CPU build, chainfs installed into it too.
# Why a venv of its own: vLLM brings ~3.5 GB and pins setuptools and numpy; chainfs's own venv
# stays small and quick to build. The tests in .venv start vLLM servers with this venv's Python.
# torch 2.13.0 (CPU) comes from the machine's local wheel folder, which pip searches. PyPI's
# torchvision, torchaudio and torchcodec (vLLM requires them; a text model uses none) fail to
# import beside that torch and break transformers' imports, so they are removed afterwards.
set -euo pipefail
VENV=${1:-.venv-vllm}
PYTHON=${2:-python3}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[vllm]'
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm, transformers, torch, chainfs.integrations.vllm; print('vllm', vllm.__version__, 'torch', torch.__version__)"
