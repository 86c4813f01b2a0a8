"""A vLLM OpenAI server in its own process, with or without ChainfsConnector (tests, load test).

Imports nothing from vLLM: the process runs under the Python that has vLLM (`vllm_python()`), so
the caller may live in chainfs's own venv. The settings are the ones that make vLLM's CPU build
behave on a small shared machine: offline (no model hub), a fixed KV space, unpinned OpenMP
threads of a fixed count (pinning puts every instance on core 0; a changing thread count changes
bf16 results), eager mode (no compile wait).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from chainfs.cluster.process import is_alive, is_ours, reap, wait_for
from chainfs.loadtest.services import free_port

MARKER = "vllm.entrypoints.openai.api_server"
CONNECTOR_MODULE = "chainfs.integrations.vllm"
REPO_VENV = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


def vllm_python() -> str:
    """$CHAINFS_VLLM_PYTHON, this Python if it has vLLM, else the checkout's .venv-vllm."""
    env = os.environ.get("CHAINFS_VLLM_PYTHON")
    if env:
        return env
    try:
        if find_spec("vllm.entrypoints") is not None:
            return sys.executable
    except ImportError:  # no vllm package at all
        pass
    if REPO_VENV.exists():
        return str(REPO_VENV)
    raise FileNotFoundError("no Python with vLLM: run `make vllm-setup` (builds .venv-vllm) or set "
                            "CHAINFS_VLLM_PYTHON")


def connector_config(url: str, capacity_bytes: int | None = None, **extra: Any) -> dict[str, Any]:
    """The --kv-transfer-config of ChainfsConnector on the store at `url`."""
    cfg: dict[str, Any] = {"url": url, **extra}
    if capacity_bytes:
        cfg["capacity_bytes"] = int(capacity_bytes)
    return {"kv_connector": "ChainfsConnector", "kv_connector_module_path": CONNECTOR_MODULE,
            "kv_role": "kv_both", "kv_load_failure_policy": "recompute", "kv_connector_extra_config": cfg}


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port; a context manager."""

    def __init__(self, model_dir: str | Path, log_path: Path, kv_transfer: dict[str, Any] | None = None,
                 threads: int = 1, max_model_len: int = 2048, kv_space_gib: int = 1,
                 block_size: int | None = None, extra_args: list[str] | None = None, python: str | None = None,
                 single_process: bool = False) -> None:
        """Spawns the server; `wait_ready` waits for it. `single_process` runs the engine and its
        worker inside the API server (starts ~2x faster; for tests, not for timing)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = str(model_dir)
        args = [python or vllm_python(), "-m", MARKER, "--model", self.model, "--host", "127.0.0.1",
                "--port", str(self.port), "--enforce-eager", "--gpu-memory-utilization", "0.1",
                "--max-model-len", str(max_model_len), "--enable-prompt-tokens-details",
                "--enable-prefix-caching", "--disable-uvicorn-access-log", "--distributed-executor-backend", "uni"]
        if block_size:
            args += ["--block-size", str(block_size)]
        if kv_transfer:
            args += ["--kv-transfer-config", json.dumps(kv_transfer)]
        args += extra_args or []
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE=str(kv_space_gib),
                   VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_CPU_NUM_OF_RESERVED_CPU="1", OMP_NUM_THREADS=str(threads),
                   VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
        if single_process:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.started = time.monotonic()
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
        self.start_s = 0.0

    def wait_ready(self, timeout: float = 600.0) -> "VLLMServer":
        """Polls /health until it answers (start-up time in `start_s`); stops the server on failure."""
        try:
            wait_for(self._ready, timeout, f"vLLM on port {self.port} (log {self.log_path})", interval=0.5)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.monotonic() - self.started
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"vLLM exited with status {self.proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def complete(self, prompt: list[int], max_tokens: int = 8, cache_salt: str | None = None,
                 logprobs: int | None = 1, timeout: float = 300.0) -> dict[str, Any]:
        """One greedy completion of token ids (EOS ignored, so every run has max_tokens tokens)."""
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                "ignore_eos": True, "return_token_ids": True}
        if logprobs is not None:
            body["logprobs"] = logprobs
        if cache_salt is not None:
            body["cache_salt"] = cache_salt
        req = urllib.request.Request(f"{self.url}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"vLLM answered {exc.code}: {exc.read()[:500]!r}") from exc

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server (it stops its engine and worker), then SIGKILL to its process group."""
        pid = self.proc.pid
        if is_alive(pid) and is_ours(pid, MARKER):
            try:
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: (reap(self.proc), not is_alive(pid))[1], timeout, f"vLLM pid {pid} to exit")
            except (ProcessLookupError, TimeoutError):
                pass
        try:
            os.killpg(pid, signal.SIGKILL)  # its own session: the engine core and worker it started
        except (ProcessLookupError, PermissionError):
            pass
        reap(self.proc)

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_servers(stack: ExitStack, count: int, model_dir: str | Path, log_dir: Path,
                  kv_transfer: list[dict[str, Any] | None], timeout: float = 600.0,
                  **kwargs: Any) -> list[VLLMServer]:
    """Spawns `count` servers at once (start-up is mostly imports: they overlap), each stopped when
    `stack` closes, and waits for all of them."""
    servers = [stack.enter_context(VLLMServer(model_dir, log_dir / f"vllm-{i}.log", kv_transfer[i], **kwargs))
               for i in range(count)]
    waiting = list(servers)

    def poll() -> bool:  # each server's start_s is the moment it first answered
        for s in list(waiting):
            if s._ready():
                s.start_s = time.monotonic() - s.started
                waiting.remove(s)
        return not waiting

    wait_for(poll, timeout, f"{len(waiting)} vLLM servers (logs in {log_dir})", interval=0.5)
    return servers
