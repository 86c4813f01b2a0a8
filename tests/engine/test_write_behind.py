"""The engine's KV write-behind: off the compute lock, bounded, deduplicated, drained on shutdown.

The blocks land in a real `file://` block store; a gate in front of it holds the writer still so a
test can see what waits behind it."""

from __future__ import annotations

import threading

import fsspec
import numpy as np
import pytest

from chainfs.engine.cache import CacheHandle, namespace_for
from chainfs.engine.model import Transformer
from chainfs.engine.service import Engine
from chainfs.engine.writebehind import WriteBehind
from chainfs.kvcache import KVBlockStore, Lookup, KVNamespace, block_keys

NS = KVNamespace(model="wb", dtype="float32", layout="L1.KV.H1.T.D4", block_tokens=4)


class Gated:
    """A real block store whose writes wait until the test opens the gate."""

    def __init__(self, store: KVBlockStore) -> None:
        self.store, self.holds = store, store.holds
        self.gate, self.entered = threading.Event(), threading.Event()

    def store_runs(self, runs) -> int:
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        return self.store.store_runs(runs)


def blocks(n: int, seed: int = 0) -> tuple[list[bytes], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, 1000, n * NS.block_tokens)
    kv = [rng.standard_normal((1, 2, 1, NS.block_tokens, 4)).astype(np.float32) for _ in range(n)]
    return block_keys(NS, toks), kv


@pytest.fixture()
def gated(tmp_path) -> Gated:
    return Gated(KVBlockStore(fsspec.filesystem("file"), str(tmp_path / "kv"), NS))


def test_drains_on_close_and_every_block_is_readable(gated: Gated) -> None:
    writer = WriteBehind()
    keys, kv = blocks(6)
    for i in range(0, 6, 2):
        assert writer.submit(gated, keys[i:i + 2], kv[i:i + 2]).queued == 2
    gated.gate.set()
    assert writer.close(timeout=30) is True
    s = writer.stats.snapshot()
    assert s["stored_blocks"] == 6 and s["pending_bytes"] == 0 and s["dropped_blocks"] == 0
    fresh = KVBlockStore(gated.store.fs, gated.store.dir.rsplit("/", 1)[0], NS)
    loaded = fresh.load(Lookup(keys, 6, NS.block_tokens))  # no refs: load stats them itself
    for got, want in zip(loaded, kv, strict=True):
        np.testing.assert_array_equal(got, want)
    assert writer.submit(gated, *blocks(1, seed=9)).queued == 0  # closed: refused and counted
    assert writer.stats.dropped_blocks == 1


def test_full_queue_drops_and_counts_and_memory_stays_bounded(gated: Gated) -> None:
    keys, kv = blocks(8)
    one = kv[0].nbytes
    writer = WriteBehind(max_bytes=3 * one)
    assert writer.submit(gated, keys[:1], kv[:1]).queued == 1
    assert gated.entered.wait(10)  # the writer holds block 0 (still counted as pending)
    assert writer.submit(gated, keys[1:3], kv[1:3]).queued == 2
    assert writer.submit(gated, keys[3:4], kv[3:4]).queued == 0  # would exceed 3 blocks: dropped
    assert writer.submit(gated, keys[4:6], kv[4:6]).queued == 0
    s = writer.stats.snapshot()
    assert s["dropped_blocks"] == 3 and s["pending_bytes"] == 3 * one and s["max_pending_bytes"] <= 3 * one
    gated.gate.set()
    assert writer.drain(30)
    assert writer.submit(gated, keys[3:4], kv[3:4]).queued == 1  # room again
    assert writer.close(30) and writer.stats.stored_blocks == 4
    assert writer.stats.max_pending_bytes <= 3 * one


def test_duplicates_queued_or_stored_are_dropped_and_waited_for(gated: Gated) -> None:
    writer = WriteBehind()
    keys, kv = blocks(4)
    first = writer.submit(gated, keys[:3], kv[:3])
    second = writer.submit(gated, keys[1:4], kv[1:4])
    assert (first.queued, second.queued) == (3, 1)  # 1 and 2 are queued already
    assert not second.wait(0.2)  # its blocks 1 and 2 ride in the first job, which is stuck
    gated.gate.set()
    assert second.wait(30) and first.wait(30)
    fresh = KVBlockStore(gated.store.fs, gated.store.dir.rsplit("/", 1)[0], NS)
    assert fresh.lookup_keys(keys).hit_blocks == 4  # waited for: all four are in the store
    assert writer.drain(30)
    assert writer.submit(gated, keys, kv).queued == 0  # all in the store's index now
    s = writer.stats.snapshot()
    assert s["duplicate_blocks"] == 2 + 4 and s["stored_blocks"] == 4
    writer.close(5)


def test_shutdown_deadline_drops_what_is_left(gated: Gated) -> None:
    writer = WriteBehind()
    keys, kv = blocks(3)
    writer.submit(gated, keys[:1], kv[:1])
    assert gated.entered.wait(10)
    writer.submit(gated, keys[1:], kv[1:])
    assert writer.close(timeout=0.2) is False  # the store is stuck: the deadline wins
    assert writer.stats.dropped_blocks == 2
    gated.gate.set()  # the stuck write finishes; nothing else is written after close
    assert writer.drain(30) and writer.stats.stored_blocks == 1


def test_the_compute_lock_is_not_held_while_storing(tiny_model: Transformer, tmp_path) -> None:
    """With the store stuck, requests keep completing: stores never block a request."""
    model = tiny_model
    cache = CacheHandle(f"file://{tmp_path}/kv", namespace_for(model.config, 16))
    engine = Engine(model, cache, store_wait_s=0)  # answer without waiting for the stuck store
    store = cache.get()
    gate = threading.Event()
    real = store.store_runs
    store.store_runs = lambda runs: (gate.wait(30), real(runs))[1]  # type: ignore[method-assign]
    prompt = list(b"a shared prefix for the write-behind test, long enough for blocks" * 3)
    first = engine.complete(prompt, max_tokens=2)
    second = engine.complete(prompt[::-1], max_tokens=2)  # would deadlock if the lock waited on stores
    assert first.kv_bytes_written > 0 and second.kv_bytes_written > 0 and not gate.is_set()
    assert engine.writer.stats.stored_blocks == 0
    gate.set()
    assert engine.close(30)
    third = engine.complete(prompt, max_tokens=2)
    assert third.cached_tokens == (len(prompt) - 1) // 16 * 16 and third.token_ids == first.token_ids


def test_an_answer_waits_for_its_own_blocks_but_not_for_the_lock(tiny_model: Transformer, tmp_path) -> None:
    """The engine answers once the request's blocks are stored, so another engine's next lookup
    finds them; waiting happens after the compute lock is released."""
    url = f"file://{tmp_path}/kv"
    engine = Engine(tiny_model, CacheHandle(url, namespace_for(tiny_model.config, 16)))
    prompt = list(b"one conversation turn, then the next one on another engine" * 4)
    done = engine.complete(prompt, max_tokens=2)
    assert done.timings["kv_store_wait_ms"] >= 0 and engine.writer.stats.stored_blocks == len(prompt) // 16
    other = Engine(tiny_model, CacheHandle(url, namespace_for(tiny_model.config, 16)), store_wait_s=0)
    assert other.complete(prompt, max_tokens=2).cached_tokens == (len(prompt) - 1) // 16 * 16
    engine.close(10)
    other.close(10)
