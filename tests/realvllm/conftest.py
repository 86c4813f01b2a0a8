"""Fixtures for the vLLM tests: the Python that has vLLM, the tiny model it serves.

The tests run in chainfs's venv and start vLLM servers under `.venv-vllm` (built by `make
vllm-setup`, which `make test` runs). Without it they skip, unless CHAINFS_REQUIRE_VLLM=1 (set by
`make test`) makes a missing vLLM a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chainfs.integrations.vllm_server import vllm_python


@pytest.fixture(scope="session")
def vllm_py() -> str:
    try:
        return vllm_python()
    except FileNotFoundError as exc:
        if os.environ.get("CHAINFS_REQUIRE_VLLM") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny_model(vllm_py: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    subprocess.run([vllm_py, "-m", "chainfs.cli.main", "model", "build-tiny", str(out)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    return out
