"""Capacity and LRU eviction under load, with concurrent readers and several writer processes."""

from __future__ import annotations

import multiprocessing as mp
import threading

import fsspec
import numpy as np

from chainfs.kvcache import KVBlockStore, KVNamespace, blockformat
from kvblocks import B, SHAPE, block_for, disk_usage, open_store, tokens

BLOCK_FILE = blockformat.HEADER_SIZE + int(np.prod(SHAPE)) * 4


def test_lru_evicts_least_recently_accessed(tmp_path, ns: KVNamespace) -> None:
    store = open_store(fsspec.filesystem("file"), str(tmp_path), ns, capacity_bytes=3 * BLOCK_FILE)
    seqs = [tokens(B, seed=s) for s in range(4)]
    for i in range(3):
        store.store(seqs[i], [block_for(i)])
    assert store.lookup(seqs[0]).hit_blocks == 1  # touch the oldest: seq 1 is now LRU
    store.store(seqs[3], [block_for(3)])
    hits = [store.lookup(s).hit_blocks for s in seqs]
    assert hits == [1, 0, 1, 1] and store.stats.evictions == 1
    assert disk_usage(store) <= 3 * BLOCK_FILE


def test_capacity_holds_under_writes_while_readers_never_see_corrupt_blocks(tmp_path, ns: KVNamespace) -> None:
    fs = fsspec.filesystem("file")
    capacity = 10 * BLOCK_FILE
    writer = open_store(fs, str(tmp_path), ns, capacity_bytes=capacity)
    readers = [open_store(fs, str(tmp_path), ns) for _ in range(3)]
    seqs = [tokens(2 * B, seed=s) for s in range(40)]
    stop = threading.Event()
    problems: list[str] = []
    loaded = [0]

    def read(store: KVBlockStore, offset: int) -> None:
        i = offset
        while not stop.is_set():
            s = i % len(seqs)
            for j, got in enumerate(store.load(store.lookup(seqs[s]))):
                if not np.array_equal(got, block_for(1000 * s + j)):
                    problems.append(f"seq {s} block {j} has wrong content")
                loaded[0] += 1
            i += 7

    threads = [threading.Thread(target=read, args=(r, k)) for k, r in enumerate(readers)]
    for t in threads:
        t.start()
    usage = []
    try:
        for rounds in range(2):
            for s, seq in enumerate(seqs):
                writer.store(seq, [block_for(1000 * s), block_for(1000 * s + 1)])
                usage.append(disk_usage(writer))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not problems, problems[:3]
    assert max(usage) <= capacity, f"store grew to {max(usage)} > {capacity}"
    assert writer.stats.evictions >= 60
    assert sum(r.stats.corrupt_blocks for r in readers) == 0
    assert loaded[0] > 0, "readers should have found some blocks before they were evicted"


def _hammer(root: str, ns: KVNamespace) -> None:
    store = KVBlockStore(fsspec.filesystem("file"), root, ns)
    for _ in range(3):
        for s in range(10):  # both processes write the same keys at the same time
            store.index.replace({})  # forget: force real rewrites of shared keys
            store.store(tokens(2 * B, seed=s), [block_for(1000 * s), block_for(1000 * s + 1)])


def test_two_writer_processes_never_corrupt_the_store(tmp_path, ns: KVNamespace) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), ns)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    store = open_store(fsspec.filesystem("file"), str(tmp_path), ns)
    assert len(store.index) == 20  # segment files of 1 and 1 block per prompt
    for s in range(10):
        got = store.load(store.lookup(tokens(2 * B, seed=s)))
        assert len(got) == 2 and np.array_equal(got[1], block_for(1000 * s + 1))
    assert store.stats.corrupt_blocks == 0
