"""Fixtures for the engine tests: models (built once), engine processes started via the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from chainfs.engine.model import Transformer
from chainfs.engine.presets import PRESETS


@pytest.fixture(scope="session")
def tiny_model() -> Transformer:
    return Transformer(PRESETS["tiny"])


@pytest.fixture(scope="session")
def small_model() -> Transformer:
    return Transformer(PRESETS["small"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None, timeout: float = 30.0,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class EngineProc:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def complete(self, prompt: Any, max_tokens: int = 4, stored: bool = True) -> dict:
        """One completion; with `stored`, also waits until its KV blocks left the write-behind queue."""
        status, body = http("POST", f"{self.url}/v1/completions", {"prompt": prompt, "max_tokens": max_tokens})
        assert status == 200, body
        if stored:
            self.wait_stored()
        return body

    def wait_stored(self, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while (self.health().get("write_behind") or {}).get("pending_bytes", 0) > 0:
            assert time.monotonic() < end, "the engine's write-behind queue never drained"
            time.sleep(0.02)

    def health(self) -> dict:
        return http("GET", f"{self.url}/health")[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture()
def start_engine(tmp_path: Path) -> Iterator[Callable[..., EngineProc]]:
    """Starts `chainfs engine serve` processes; every one is stopped at teardown."""
    procs: list[EngineProc] = []

    def start(cache: str, *extra: str, deadline: float = 60.0) -> EngineProc:
        port = free_port()
        log = tmp_path / f"engine-{port}.log"
        cmd = [sys.executable, "-m", "chainfs.cli.main", "engine", "serve", "--port", str(port),
               "--model", "tiny", "--cache", cache, *extra]
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        eng = EngineProc(proc, port, log)
        procs.append(eng)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if proc.poll() is not None:
                pytest.fail(f"engine exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if http("GET", f"{eng.url}/health", timeout=2)[0] == 200:
                    return eng
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"engine not healthy within {deadline}s: {log.read_text()[-2000:]}")

    yield start
    for eng in procs:
        eng.stop()
