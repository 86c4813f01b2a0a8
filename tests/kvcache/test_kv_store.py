"""KVBlockStore over fsspec `file` and `memory`: hits, batching, corruption, restart, failures."""

from __future__ import annotations

import os

import numpy as np

from chainfs.cluster.process import wait_for
from chainfs.kvcache import KVBlockStore, KVNamespace, block_keys
from chainfs.kvcache.direct import load_into
from kvblocks import B, block_for, layer_views, open_store, tokens


def fill(store: KVBlockStore, toks: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    blocks = [block_for(seed + i) for i in range(len(toks) // B)]
    assert store.store(toks, blocks) == len(blocks)
    return blocks


def test_lookup_load_store_roundtrip(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    store = open_store(fs, root, ns)
    toks = tokens(5 * B + 3)
    assert store.lookup(toks).hit_tokens == 0
    blocks = fill(store, toks)
    assert len(blocks) == 5  # only full blocks
    found = store.lookup(toks)
    assert (found.hit_blocks, found.hit_tokens) == (5, 5 * B)
    for got, want in zip(store.load(found), blocks):
        np.testing.assert_array_equal(got, want)
    # a prompt sharing 3 leading blocks, then diverging, hits exactly 3
    other = toks.copy()
    other[3 * B + 1] = (other[3 * B + 1] + 1) % 256
    assert store.lookup(other).hit_blocks == 3
    # storing again writes only the new blocks
    before = store.stats.stored_blocks
    store.store(other, [block_for(100 + i) for i in range(5)])
    assert store.stats.stored_blocks - before == 2
    s = store.stats.snapshot()
    assert s["hit_tokens"] == 8 * B and s["queries"] == 3 and s["bytes_read"] > 0 and s["errors"] == 0


def test_lookup_stats_only_and_load_reads_without_a_second_stat(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    fill(KVBlockStore(fs, root, ns), tokens(12 * B))
    counting = CountingFS(fs)
    store = KVBlockStore(counting, root, ns)  # a fresh store: no block refs cached yet
    counting.calls.clear()
    found = store.lookup(tokens(12 * B))
    assert found.hit_blocks == 12 and set(counting.calls) == {"info"}  # no header reads
    counting.calls.clear()
    assert len(store.load(found)) == 12
    assert counting.calls == ["cat_ranges"]  # one batched read, no stat
    counting.calls.clear()
    assert store.lookup(tokens(12 * B)).hit_blocks == 12 and counting.calls == []  # refs cached


class CountingFS:
    """Records the filesystem calls the store makes itself (not those fsspec makes inside them)."""

    def __init__(self, fs) -> None:
        self._fs, self.calls = fs, []

    def __getattr__(self, name: str):
        attr = getattr(self._fs, name)
        if callable(attr) and not name.startswith("_"):
            def call(*a, **k):
                self.calls.append(name)
                return attr(*a, **k)
            return call
        return attr


def test_corrupt_and_truncated_blocks_are_misses_counted_and_rewritten(tmp_path, ns: KVNamespace) -> None:
    import fsspec
    fs = fsspec.filesystem("file")
    store = open_store(fs, str(tmp_path / "kv"), ns, segment_blocks=1)  # a file per block
    toks = tokens(4 * B)
    blocks = fill(store, toks)
    keys = block_keys(ns, toks)
    path = store.path_of(keys[2])
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF  # payload corruption: only the full read can see it
    open(path, "wb").write(bytes(data))
    found = store.lookup(toks)
    assert found.hit_blocks == 4
    loaded = store.load(found)
    assert len(loaded) == 2 and store.stats.corrupt_blocks == 1
    # the engine recomputes and stores from the first bad block: the file is rewritten whole
    assert store.store(toks, blocks[2:], start_block=2) == 1
    assert len(store.load(store.lookup(toks))) == 4
    # truncation is caught by the load of a store that knew the block, by a fresh one's lookup
    open(store.path_of(keys[1]), "wb").write(data[:10])
    assert len(store.load(store.lookup(toks))) == 1 and store.stats.corrupt_blocks == 2
    fresh = open_store(fs, str(tmp_path / "kv"), ns, segment_blocks=1)
    assert fresh.lookup(toks).hit_blocks == 1 and fresh.stats.corrupt_blocks == 1


def test_load_into_reads_each_layer_into_its_own_slot_and_verifies(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    store = open_store(fs, root, ns)
    toks = tokens(4 * B)
    blocks = fill(store, toks)
    dest, views = layer_views(4)
    assert load_into(store, store.lookup(toks), views) == 4
    np.testing.assert_array_equal(dest, np.stack(blocks))
    assert store.stats.loaded_blocks == 4 and store.stats.corrupt_blocks == 0
    # fewer destinations than hits: only those; destinations of another size: not read at all
    assert load_into(store, store.lookup(toks), views[:2]) == 2
    small = np.zeros(8, np.float32)
    assert load_into(store, store.lookup(toks), [[memoryview(small).cast("B")]]) == 0
    # a corrupt payload byte (in the last layer) stops the load at that block and is counted
    single = open_store(fs, f"{root}-single", ns, segment_blocks=1)  # a file per block
    fill(single, toks)
    path = single.path_of(block_keys(ns, toks)[1])
    data = bytearray(fs.cat_file(path))
    data[-1] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    fresh = open_store(fs, f"{root}-single", ns, segment_blocks=1)
    assert load_into(fresh, fresh.lookup(toks), layer_views(4)[1]) == 1 and fresh.stats.corrupt_blocks == 1


def test_restart_rebuilds_index_and_keeps_hits(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    first = open_store(fs, root, ns)
    toks = tokens(6 * B)
    fill(first, toks)
    second = open_store(fs, root, ns, capacity_bytes=10 ** 9)
    assert len(second.index) == 4 and second.index.total_bytes == first.index.total_bytes  # 1+1+2+2 blocks
    assert second.lookup(toks).hit_blocks == 6
    assert second.store(toks, [block_for(i) for i in range(6)]) == 0  # known present: not rewritten


class FlakyFS:
    """Delegates to a real filesystem unless `broken`, then every call fails like a dead server."""

    def __init__(self, fs) -> None:
        self._fs, self.broken = fs, False

    def __getattr__(self, name: str):
        attr = getattr(self._fs, name)
        if callable(attr) and name != "_strip_protocol":
            def call(*a, **k):
                if self.broken:
                    raise ConnectionError("store unreachable")
                return attr(*a, **k)
            return call
        return attr


def test_backend_failures_are_misses_and_recover(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    flaky = FlakyFS(fs)
    store = KVBlockStore(flaky, root, ns, capacity_bytes=1 << 20)
    toks = tokens(3 * B)
    fill(store, toks)
    flaky.broken = True
    assert store.load(store.lookup(toks)) == []  # known blocks cannot be read: misses
    assert store.lookup(tokens(3 * B, seed=9)).hit_blocks == 0
    assert store.store(tokens(2 * B, seed=5), [block_for(1), block_for(2)]) == 0
    assert store.rebuild_index() is False
    # The first failure opens the breaker; the calls after it skip the backend at once.
    assert store.stats.errors == 1 and store.stats.unavailable == 4 and store.breaker.is_open
    flaky.broken = False
    wait_for(lambda: not store.breaker.is_open, 10.0, "the breaker's probe to close it")
    assert len(store.load(store.lookup(toks))) == 3
    store.close()


def test_other_failures_leave_the_breaker_closed(fs_root, ns: KVNamespace) -> None:
    """A missing directory or a bad path says nothing about reachability: no fail-fast."""
    fs, root = fs_root
    store = KVBlockStore(fs, root, ns)
    store._backend_error("load", NotADirectoryError(20, "not a directory"))
    store.breaker.failed(ConnectionError(16, "busy"))  # EBUSY: an overloaded node, not away
    assert not store.breaker.is_open and store.lookup(tokens(B)).hit_blocks == 0
    assert store.stats.unavailable == 0


def test_dtype_and_layout_survive(tmp_path, ns: KVNamespace) -> None:
    import fsspec
    store = open_store(fsspec.filesystem("file"), str(tmp_path), ns)
    toks = tokens(B)
    kv = block_for(3).astype(np.float16)
    store.store(toks, [kv])
    (got,) = store.load(store.lookup(toks))
    assert got.dtype == np.float16 and got.shape == kv.shape
    assert not [n for _, _, files in os.walk(tmp_path) for n in files if ".tmp-" in n]
