"""The block store over a real chainfs cluster (separate processes on loopback)."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest

pytest.importorskip("chainfs.client.fsspec.fs")

from chainfs.kvcache import KVBlockStore, KVNamespace, block_keys  # noqa: E402
from chainfs.kvcache.direct import load_into  # noqa: E402
from kvblocks import B, block_for, disk_usage, layer_views, tokens  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture()
def chain_fs(cluster):
    host, port = cluster.address.rsplit(":", 1)
    return fsspec.filesystem("chainfs", host=host, port=int(port))


def test_store_lookup_load_restart_and_corruption_on_chainfs(chain_fs, ns: KVNamespace) -> None:
    root = f"/kv-{uuid.uuid4().hex[:8]}"
    store = KVBlockStore(chain_fs, root, ns, capacity_bytes=1 << 30, segment_blocks=1)  # a file per block
    toks = tokens(4 * B)
    blocks = [block_for(i) for i in range(4)]
    assert store.lookup(toks).hit_blocks == 0
    assert store.store(toks, blocks) == 4
    found = store.lookup(toks)
    assert found.hit_blocks == 4
    for got, want in zip(store.load(found), blocks):
        np.testing.assert_array_equal(got, want)

    restarted = KVBlockStore(chain_fs, root, ns, capacity_bytes=1 << 30)
    assert len(restarted.index) == 4 and restarted.lookup(toks).hit_blocks == 4

    path = restarted.path_of(block_keys(ns, toks)[3])
    blob = bytearray(chain_fs.cat_file(path))
    blob[-1] ^= 0xFF
    chain_fs.pipe_file(path, bytes(blob))  # a new inode: a store that cached the old one reads that
    fresh = KVBlockStore(chain_fs, root, ns, capacity_bytes=1 << 30, segment_blocks=1)
    assert len(fresh.load(fresh.lookup(toks))) == 3
    assert fresh.stats.corrupt_blocks == 1
    assert fresh.store(toks, blocks[3:], start_block=3) == 1
    assert len(fresh.load(fresh.lookup(toks))) == 4


def test_eviction_on_chainfs(chain_fs, ns: KVNamespace) -> None:
    root = f"/kv-{uuid.uuid4().hex[:8]}"
    one = KVBlockStore(chain_fs, root, ns)
    one.store(tokens(B, seed=0), [block_for(0)])
    size = one.index.total_bytes
    store = KVBlockStore(chain_fs, root, ns, capacity_bytes=3 * size)
    for s in range(1, 8):
        store.store(tokens(B, seed=s), [block_for(s)])
        assert disk_usage(store) <= 3 * size
    assert store.stats.evictions == 5
    assert [store.lookup(tokens(B, seed=s)).hit_blocks for s in (5, 6, 7)] == [1, 1, 1]


def test_load_into_per_layer_views_on_chainfs(chain_fs, ns: KVNamespace) -> None:
    """Each layer of a block lands in its own view; a prefix whose later blocks vanished loads the
    rest only (a file per block here, so that one block can go)."""
    root = f"/kv-{uuid.uuid4().hex[:8]}"
    store = KVBlockStore(chain_fs, root, ns, segment_blocks=1)
    toks = tokens(3 * B)
    blocks = [block_for(10 + i) for i in range(3)]
    assert store.store(toks, blocks) == 3
    fresh = KVBlockStore(chain_fs, root, ns, segment_blocks=1)  # no refs cached: the lookup's stat gives them
    dest, views = layer_views(3)
    assert load_into(fresh, fresh.lookup(toks), views) == 3
    np.testing.assert_array_equal(dest, np.stack(blocks))
    chain_fs.rm(fresh.path_of(block_keys(ns, toks)[1]))
    later = KVBlockStore(chain_fs, root, ns, segment_blocks=1)
    assert load_into(later, later.lookup(toks), layer_views(3)[1]) == 1  # stops where the prefix ends
