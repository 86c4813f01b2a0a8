"""Engine processes under hostile clients: API keys and tenants through the CLI, a bounded HTTP
thread pool (503 past it), stalled connections dropped by the idle deadline."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from conftest import EngineProc, http

pytestmark = pytest.mark.integration

PROMPT = "Two tenants, one prompt, never one block. " * 5  # 210 tokens: 13 blocks of 16


def stalled(port: int, sent: bytes = b"") -> socket.socket:
    """A connection that sends `sent` (maybe nothing, maybe half a request), then nothing more."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if sent:
        s.sendall(sent)
    return s


def closed_within(s: socket.socket, deadline: float) -> bytes:
    """What the server sent before closing `s`; fails if it is still open after `deadline` s."""
    s.settimeout(deadline)
    got = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            piece = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return got
        if not piece:
            return got
        got += piece
    pytest.fail(f"the server kept a stalled connection open past {deadline} s")


def metrics_text(eng: EngineProc) -> str:
    with urllib.request.urlopen(f"{eng.url}/metrics", timeout=10) as r:
        return r.read().decode()


def test_keys_and_tenants_through_the_cli(start_engine: Callable[..., EngineProc], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-tenant-a alpha\nsk-tenant-b bravo\n")
    keys.chmod(0o600)
    eng = start_engine(f"file://{tmp_path}/kv", "--block-tokens", "16", "--api-key-file", str(keys),
                       "--salt-per-key")
    body = {"prompt": PROMPT, "max_tokens": 2}
    status, reply = http("POST", f"{eng.url}/v1/completions", body)
    assert status == 401 and reply["error"]["code"] == "invalid_api_key"
    assert http("POST", f"{eng.url}/v1/completions", body, headers={"Authorization": "Bearer sk-nope"})[0] == 401

    def complete(key: str) -> int:
        status, reply = http("POST", f"{eng.url}/v1/completions", body, headers={"Authorization": f"Bearer {key}"})
        assert status == 200, reply
        eng.wait_stored()
        return reply["usage"]["prompt_cache_hit_tokens"]

    assert complete("sk-tenant-a") == 0
    assert complete("sk-tenant-b") == 0, "tenant B hit tenant A's blocks"
    assert complete("sk-tenant-a") == 208 and complete("sk-tenant-b") == 208
    text = metrics_text(eng)
    assert 'chainfs_engine_tenant_prefix_cache_hits_total{model_name="tiny",tenant="bravo"} 208.0' in text
    assert "sk-tenant" not in text


def test_past_the_thread_cap_a_client_gets_503_and_stalled_ones_are_dropped(
        start_engine: Callable[..., EngineProc]) -> None:
    idle = 3.0
    eng = start_engine("none", "--max-http-threads", "2", "--http-idle-timeout", str(idle),
                       "--http-queue-timeout", "0.3")
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
    hogs = [stalled(eng.port), stalled(eng.port, head + b'{"prompt": ')]  # nothing; half a body
    t0 = time.monotonic()
    # Both threads are taken: the next client waits 0.3 s for one, then is told so.
    deadline = time.monotonic() + 10
    while True:
        status, reply = http("POST", f"{eng.url}/v1/completions", {"prompt": "hi", "max_tokens": 1}, timeout=10)
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the hogs' connections were not yet accepted
    assert status == 503 and reply["error"]["code"] == 503 and "busy" in reply["error"]["message"]
    # The idle deadline drops both hogs (the half-sent body gets a 400 first: Werkzeug's
    # reader reports a body that stops short as the client's fault) ...
    assert closed_within(hogs[0], idle + 5) == b""
    answer = closed_within(hogs[1], idle + 5)
    assert answer.startswith(b"HTTP/1.1 400") and b"invalid_request_error" in answer
    assert time.monotonic() - t0 < 2 * idle + 5
    # ... and clients are served again.
    status, reply = http("POST", f"{eng.url}/v1/completions", {"prompt": "hi", "max_tokens": 1})
    assert status == 200, reply
    text = metrics_text(eng)
    assert 'chainfs_engine_http_rejected_total{model_name="tiny"} ' in text
    rejected = [line for line in text.splitlines() if line.startswith("chainfs_engine_http_rejected_total")]
    assert float(rejected[0].split()[-1]) >= 1
    for s in hogs:
        s.close()
    assert eng.health()["status"] == "ok"
