"""Segment files: runs of blocks packed into one file, found by their last block's key."""

from __future__ import annotations

import shutil

import numpy as np

from chainfs.kvcache import KVNamespace, block_keys
from kvblocks import B, block_for, open_store, tokens


def _names(store) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in store.fs.find(store.dir))


def test_runs_pack_into_segments_found_by_one_stat(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    writer = open_store(fs, root, ns, segment_blocks=4)
    toks = tokens(10 * B, seed=1)
    keys = block_keys(ns, toks)
    assert writer.store(toks, [block_for(i) for i in range(10)]) == 10
    # segments of 1, 1, 2, 4 and 2 blocks at their last block's path, and the block size marker
    assert _names(writer) == sorted([keys[0].hex(), keys[1].hex(), keys[3].hex(), keys[7].hex(), keys[9].hex(),
                                     f"block-bytes-{writer.block_bytes}"])
    reader = open_store(fs, root, ns)  # knows nothing but the listing
    found = reader.lookup(toks)
    assert found.hit_blocks == 10 and reader.block_bytes == writer.block_bytes
    for i, got in enumerate(reader.load(found)):
        np.testing.assert_array_equal(got, block_for(i))
    # the next turn of the conversation finds every block the last one stored
    longer = np.concatenate([toks, tokens(3 * B, seed=2)])
    reader.drop_cached_refs()
    assert reader.lookup(longer).hit_blocks == 10
    # a prompt that shares 6 blocks hits only the whole segments it shares (4): packing's price
    other = toks.copy()
    other[6 * B] = (other[6 * B] + 1) % 256
    reader.drop_cached_refs()
    assert reader.lookup(other).hit_blocks == 4


def test_vanished_segment_ends_the_hits_and_is_rewritten(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    store = open_store(fs, root, ns, segment_blocks=4)
    toks = tokens(10 * B, seed=3)
    blocks = [block_for(i) for i in range(10)]
    store.store(toks, blocks)
    found = store.lookup(toks)
    fs.rm_file(found.refs[5].path)  # blocks 4..7, removed by another engine's eviction
    loaded = store.load(found)
    assert len(loaded) == 4 and store.stats.load_missing == 1 and store.stats.errors == 0
    assert store.lookup(toks).hit_blocks == 4  # blocks 8, 9 are stored but past the gap
    assert store.store(toks, blocks[4:], start_block=4) == 4  # 8, 9 known present: skipped
    assert len(store.load(store.lookup(toks))) == 10


def test_segment_of_other_blocks_is_a_miss_never_wrong_bytes(tmp_path, ns: KVNamespace) -> None:
    import fsspec
    fs = fsspec.filesystem("file")
    store = open_store(fs, str(tmp_path / "kv"), ns, segment_blocks=4)
    a, b = tokens(4 * B, seed=4), tokens(4 * B, seed=5)
    store.store(a, [block_for(i) for i in range(4)])
    store.store(b, [block_for(100 + i) for i in range(4)])
    path_a, path_b = store.path_of(block_keys(ns, a)[3]), store.path_of(block_keys(ns, b)[3])
    shutil.copyfile(path_b, path_a)  # a's name, b's blocks
    fresh = open_store(fs, str(tmp_path / "kv"), ns)
    found = fresh.lookup(a)  # a's segments: blocks 0, 1, then 2..3 (now b's 2..3)
    assert found.hit_blocks == 4  # the stat cannot tell; the load's key check does
    loaded = fresh.load(found)
    assert len(loaded) == 2 and fresh.stats.corrupt_blocks == 1
    assert len(fresh.load(fresh.lookup(a))) == 2 and fresh.stats.corrupt_blocks == 2  # until rewritten
    assert fresh.store(a, [block_for(i) for i in range(4)]) == 2
    for i, got in enumerate(fresh.load(fresh.lookup(a))):
        np.testing.assert_array_equal(got, block_for(i))


def test_store_opened_before_any_block_learns_the_size_from_a_header(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    early = open_store(fs, root, ns)  # empty store: no size marker in its listing
    writer = open_store(fs, root, ns)
    toks = tokens(3 * B, seed=6)
    writer.store(toks, [block_for(i) for i in range(3)])
    assert early.block_bytes is None
    found = early.lookup(toks)
    assert found.hit_blocks == 3 and early.block_bytes == writer.block_bytes
    assert len(early.load(found)) == 3
