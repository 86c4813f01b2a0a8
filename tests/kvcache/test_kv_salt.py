"""Tenant salts (vLLM's cache_salt) and raw 16-bit blocks (bfloat16 KV)."""

from __future__ import annotations

import numpy as np

from chainfs.kvcache import KVBlockStore, KVNamespace, block_keys
from chainfs.kvcache import blockformat

from kvblocks import B, tokens


def test_salt_changes_every_key_and_no_salt_is_the_plain_chain(ns: KVNamespace) -> None:
    t = tokens(4 * B)
    plain, a, b = block_keys(ns, t), block_keys(ns, t, "tenant-a"), block_keys(ns, t, "tenant-b")
    assert block_keys(ns, t, None) == block_keys(ns, t, "") == plain
    assert block_keys(ns, t, b"tenant-a") == a
    assert not set(plain) & set(a) and not set(a) & set(b)


def test_salted_blocks_hit_only_the_same_salt(fs_root, ns: KVNamespace) -> None:
    fs, root = fs_root
    store = KVBlockStore(fs, root, ns)
    t = tokens(3 * B, seed=5)
    blocks = [np.full((2, B), i, np.float32) for i in range(3)]
    assert store.store(t, blocks, keys=store.keys_of(t, "a")) == 3
    assert store.lookup(t, keys=store.keys_of(t, "a")).hit_blocks == 3
    assert store.lookup(t, keys=store.keys_of(t, "b")).hit_blocks == 0
    assert store.lookup(t).hit_blocks == 0
    found = store.lookup(t, keys=store.keys_of(t, "a"))
    assert [float(x[0, 0]) for x in store.load(found)] == [0.0, 1.0, 2.0]


def test_int16_words_roundtrip_exactly() -> None:
    key = bytes(range(16))
    kv = np.random.default_rng(0).integers(-2**15, 2**15, (2, 1, B, 8), dtype=np.int16)
    back = blockformat.decode(blockformat.encode(key, kv, B), key)
    assert back.dtype == np.int16 and np.array_equal(back, kv)
