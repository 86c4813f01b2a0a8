"""Engines for a load-test scenario: separate processes on free loopback ports, stopped by pid."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from chainfs.cluster.process import stop_pid, wait_for

ENGINE_MARKER = "chainfs.cli.main"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def engine_health(url: str, drained_within: float = 30.0) -> dict:
    """An engine's /health once its KV write-behind queue is empty (or `drained_within` passed)."""
    end = time.monotonic() + drained_within
    while True:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            info = json.loads(resp.read())
        if (info.get("write_behind") or {}).get("pending_bytes", 0) <= 0 or time.monotonic() >= end:
            return info
        time.sleep(0.05)


class EngineProcess:
    """`chainfs engine serve` in its own process; a context manager."""

    def __init__(self, model: str, cache: str, log_path: Path, block_tokens: int = 64,
                 capacity: int | None = None, start_timeout: float = 120.0, threads: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", ENGINE_MARKER, "engine", "serve", "--port", str(self.port),
                "--model", model, "--cache", cache, "--block-tokens", str(block_tokens)]
        if capacity:
            args += ["--capacity", str(capacity)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        env = dict(os.environ)
        if threads:  # engines sharing a machine should not oversubscribe its cores with BLAS threads
            env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
        try:
            wait_for(self._ready, start_timeout, f"engine on port {self.port} (log {log_path})", interval=0.1)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"engine exited with status {self.proc.returncode}:\n{tail}")
        return healthy(self.url)

    def stop(self) -> None:
        stop_pid(self.proc.pid, ENGINE_MARKER, proc=self.proc)

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_engines(stack: ExitStack, count: int, model: str, caches: list[str], log_dir: Path,
                  block_tokens: int, capacity: int | None) -> list[EngineProcess]:
    threads = max(1, (os.cpu_count() or 1) // count)
    return [stack.enter_context(EngineProcess(model, caches[i], log_dir / f"engine-{i}.log", block_tokens=block_tokens,
                                              capacity=capacity, threads=threads))
            for i in range(count)]


def run_locust(workload: Path, engines: list[str], out_dir: Path, concurrency: int, routing: str,
               duration: float | None, log_path: Path, timeout: float, api: str = "chat") -> dict:
    """Runs the locustfile headless in a separate process (gevent stays out of this one)."""
    locustfile = Path(__file__).with_name("locustfile.py")
    args = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(concurrency),
            "-r", str(concurrency), "--host", engines[0], "--engines", ",".join(engines),
            "--workload", str(workload), "--routing", routing, "--out", str(out_dir),
            "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "30",
            "--html", str(out_dir / "locust_report.html"), "--api", api]
    if duration:
        args += ["--run-time", f"{int(duration)}s"]
    with open(log_path, "ab") as log:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    summary = out_dir / "summary.json"
    if not summary.exists():
        raise RuntimeError(f"locust exited with status {proc.returncode} and no results; log: {log_path}")
    return json.loads(summary.read_text())
