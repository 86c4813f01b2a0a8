"""Engine processes (the `chainfs engine serve` CLI) sharing one store: hits across processes,
across restarts, and serving on while the store fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import pytest

pytestmark = pytest.mark.integration

PROMPT = "Engines share the KV cache of common prefixes through one store. " * 3  # 198 tokens


def test_two_engines_share_a_file_store_and_restart_keeps_hits(start_engine, tmp_path: Path) -> None:
    cache = f"file://{tmp_path}/kv"
    a = start_engine(cache, "--block-tokens", "16")
    b = start_engine(cache, "--block-tokens", "16")
    first = a.complete(PROMPT)
    assert first["usage"]["prompt_cache_hit_tokens"] == 0
    second = b.complete(PROMPT)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 192
    assert second["choices"][0]["token_ids"] == first["choices"][0]["token_ids"]
    stats = b.health()["cache"]["stats"]
    assert stats["hit_tokens"] == stats["loaded_tokens"] == 192 and stats["stored_blocks"] == 0

    a.stop()
    a2 = start_engine(cache, "--block-tokens", "16", "--capacity", str(1 << 30))
    again = a2.complete(PROMPT)
    assert again["usage"]["prompt_cache_hit_tokens"] == 192
    assert again["choices"][0]["token_ids"] == first["choices"][0]["token_ids"]


def test_engine_serves_while_store_fails_and_recovers(start_engine, tmp_path: Path) -> None:
    root = tmp_path / "kv"
    eng = start_engine(f"file://{root}", "--block-tokens", "16")
    expected = eng.complete(PROMPT)["choices"][0]["token_ids"]
    shutil.rmtree(root)
    root.write_bytes(b"not a directory")  # every store operation now fails
    broken = eng.complete(PROMPT)
    assert broken["usage"]["prompt_cache_hit_tokens"] == 0
    assert broken["choices"][0]["token_ids"] == expected
    assert eng.health()["cache"]["stats"]["errors"] >= 2
    root.unlink()
    root.mkdir()
    eng.complete(PROMPT)  # the store is back: this stores the blocks again
    assert eng.complete(PROMPT)["usage"]["prompt_cache_hit_tokens"] == 192


def test_two_engines_share_a_chainfs_store(start_engine, cluster) -> None:
    pytest.importorskip("chainfs.client.fsspec.fs")
    cache = f"{cluster.url}/kvcache-procs"
    a = start_engine(cache, "--block-tokens", "16")
    b = start_engine(cache, "--block-tokens", "16")
    first = a.complete(PROMPT)
    assert first["usage"]["prompt_cache_hit_tokens"] == 0
    second = b.complete(PROMPT)
    assert second["usage"]["prompt_cache_hit_tokens"] == 192
    assert second["choices"][0]["token_ids"] == first["choices"][0]["token_ids"]
    assert b.health()["cache"]["stats"]["hit_tokens"] == 192
    host, port = cluster.address.rsplit(":", 1)
    fs = fsspec.filesystem("chainfs", host=host, port=int(port))
    files = [p.rsplit("/", 1)[-1] for p in fs.find("/kvcache-procs") if ".tmp" not in p]
    blocks = [f for f in files if not f.startswith("block-bytes-")]
    assert len(blocks) == 5 and len(files) == 6  # 12 blocks in segments of 1, 1, 2, 4, 4; the size marker
    a.stop()
    a2 = start_engine(cache, "--block-tokens", "16")
    assert a2.complete(PROMPT)["usage"]["prompt_cache_hit_tokens"] == 192
