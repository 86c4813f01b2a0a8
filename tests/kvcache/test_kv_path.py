"""The KV path on a real chainfs cluster: metadata round trips counted, equivalence with `file://`,
and blocks that vanish between lookup and load."""

from __future__ import annotations

import os
import time
import uuid

import fsspec
import numpy as np
import pytest

from chainfs.cluster import LocalCluster
from chainfs.kvcache import KVBlockStore, KVNamespace
from kvblocks import B, SHAPE, block_for, tokens
from metacount import meta_rpcs  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def chainfs_of(cluster: LocalCluster) -> fsspec.AbstractFileSystem:
    host, port = cluster.address.rsplit(":", 1)
    return fsspec.filesystem("chainfs", host=host, port=int(port))


def test_lookup_of_n_blocks_is_one_metadata_rpc_and_load_none(cluster, ns: KVNamespace, meta_rpcs) -> None:
    fs = chainfs_of(cluster)
    root = f"/kv-{uuid.uuid4().hex[:8]}"
    toks = tokens(40 * B, seed=3)
    blocks = [block_for(i) for i in range(40)]
    writer = KVBlockStore(fs, root, ns)
    meta_rpcs.reset()
    assert writer.store(toks, blocks) == 40
    assert meta_rpcs.namespace_calls() == {"OpenWriteMany": 1, "CloseWriteMany": 1}

    reader = KVBlockStore(fs, root, ns)  # another engine: knows nothing of these blocks
    longer = np.concatenate([toks, tokens(24 * B, seed=5)])  # the next turn: 40 shared blocks
    for prompt in (toks, longer):
        reader.drop_cached_refs()
        meta_rpcs.reset()
        found = reader.lookup(prompt)
        assert found.hit_blocks == 40 and meta_rpcs.namespace_calls() == {"StatMany": 1}
    meta_rpcs.reset()
    loaded = reader.load(found)
    assert meta_rpcs.namespace_calls() == {}  # the lookup's inodes are reused: no second stat
    for got, want in zip(loaded, blocks, strict=True):
        np.testing.assert_array_equal(got, want)
    meta_rpcs.reset()
    assert reader.lookup(toks).hit_blocks == 40 and meta_rpcs.namespace_calls() == {}  # refs cached
    meta_rpcs.reset()
    miss = reader.lookup(tokens(64 * B, seed=4))
    assert miss.hit_blocks == 0 and meta_rpcs.namespace_calls() == {"StatMany": 1}


def test_chainfs_store_behaves_like_file_store_on_random_prompts(cluster, ns: KVNamespace, tmp_path) -> None:
    """The same requests against both stores: the same hits and byte-identical blocks at every step."""
    stores = [KVBlockStore(chainfs_of(cluster), f"/kv-{uuid.uuid4().hex[:8]}", ns),
              KVBlockStore(fsspec.filesystem("file"), str(tmp_path / "kv"), ns)]
    rng = np.random.default_rng(7)
    prefixes = [rng.integers(0, 1000, int(rng.integers(0, 6 * B))) for _ in range(4)]
    for step in range(24):
        base = prefixes[int(rng.integers(0, len(prefixes)))]
        prompt = np.concatenate([base, rng.integers(0, 1000, int(rng.integers(1, 4 * B)))])
        keys = stores[0].keys_of(prompt)
        found = [s.lookup(prompt[:-1], keys=keys) for s in stores]
        assert found[0].hit_blocks == found[1].hit_blocks, step
        loaded = [s.load(f) for s, f in zip(stores, found)]
        assert len(loaded[0]) == len(loaded[1]) == found[0].hit_blocks
        for a, b in zip(*loaded):
            np.testing.assert_array_equal(a, b)
        first, last = found[0].hit_blocks, len(prompt) // B
        new = [np.random.default_rng(int.from_bytes(k[:4], "little")).standard_normal(SHAPE).astype(np.float32)
               for k in keys[first:last]]  # KV as a function of the block's key, as a model's would be
        written = [s.store(prompt, new, start_block=first, keys=keys) for s in stores]
        assert written[0] == written[1]
    snaps = [s.stats.snapshot() for s in stores]
    for field in ("hit_blocks", "loaded_blocks", "stored_blocks", "skipped_blocks", "bytes_read"):
        assert snaps[0][field] == snaps[1][field], field
    assert snaps[0]["hit_blocks"] > 0 and snaps[0]["errors"] == snaps[1]["errors"] == 0


def test_block_removed_between_lookup_and_load_on_file_is_a_miss(ns: KVNamespace, tmp_path) -> None:
    store = KVBlockStore(fsspec.filesystem("file"), str(tmp_path / "kv"), ns, segment_blocks=2)
    toks = tokens(4 * B)
    blocks = [block_for(i) for i in range(4)]
    store.store(toks, blocks)
    found = store.lookup(toks)
    assert found.hit_blocks == 4
    os.unlink(found.refs[2].path)  # the segment of blocks 2 and 3
    loaded = store.load(found)
    assert len(loaded) == 2 and store.stats.load_missing == 1 and store.stats.errors == 0
    for got, want in zip(loaded, blocks):
        np.testing.assert_array_equal(got, want)
    assert store.lookup(toks).hit_blocks == 2  # its ref was dropped: the next lookup asks again


@pytest.fixture(scope="module")
def gc_cluster(tmp_path_factory):
    """Collects removed files at once, so a removed block's chunks really go."""
    with LocalCluster(tmp_path_factory.mktemp("gc"), storage_nodes=3, replicas=3, targets_per_node=2,
                      gc_interval=0.2, gc_grace=0.0) as cluster:
        yield cluster


def test_block_collected_between_lookup_and_load_on_chainfs_is_a_miss(gc_cluster, ns: KVNamespace) -> None:
    fs = chainfs_of(gc_cluster)
    store = KVBlockStore(fs, f"/kv-{uuid.uuid4().hex[:8]}", ns, segment_blocks=2)
    toks = tokens(4 * B, seed=11)
    blocks = [block_for(i) for i in range(4)]
    store.store(toks, blocks)
    found = store.lookup(toks)  # holds the inodes (and so does the store's ref cache)
    assert found.hit_blocks == 4
    gone = found.refs[2].handle
    fs.rm_file(found.refs[2].path)  # the segment of blocks 2 and 3
    client = fs.client
    deadline = time.monotonic() + 30
    while any(client.storage.list_chunks(chain, r, gone.id)
              for chain in gone.layout.chains for r in range(3)):
        assert time.monotonic() < deadline, "the removed block's chunks were never collected"
        time.sleep(0.1)
    loaded = store.load(found)
    assert len(loaded) == 2 and store.stats.load_missing == 1 and store.stats.errors == 0
    for got, want in zip(loaded, blocks):
        np.testing.assert_array_equal(got, want)
    assert store.lookup(toks).hit_blocks == 2
    assert store.store(toks, blocks[2:], start_block=2) == 2  # recomputed and written again
    assert len(store.load(store.lookup(toks))) == 4
