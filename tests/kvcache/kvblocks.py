"""Deterministic blocks and tokens for the KV block store tests.

A module of its own (not conftest): spawned child processes import the test modules again, and
`conftest` would then resolve to whichever tests folder's conftest comes first on sys.path.
"""

from __future__ import annotations

import fsspec
import numpy as np

from chainfs.kvcache import KVBlockStore, KVNamespace
from chainfs.kvcache.store import _KEY_NAME

B = 8
SHAPE = (2, 2, 2, B, 4)  # (layers, K/V, kv heads, tokens, head_dim)


def block_for(key_seed: int) -> np.ndarray:
    """A block whose content is a function of one integer, so readers can verify what they got."""
    return np.random.default_rng(key_seed).standard_normal(SHAPE).astype(np.float32)


def tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n)


def open_store(fs: fsspec.AbstractFileSystem, root: str, ns: KVNamespace, **kw) -> KVBlockStore:
    return KVBlockStore(fs, root, ns, **kw)


def disk_usage(store: KVBlockStore) -> int:
    """Bytes of block files in the store right now (a listing)."""
    try:
        listing = store.fs.find(store.dir, detail=True)
    except FileNotFoundError:
        return 0
    return sum(int(i.get("size") or 0) for p, i in listing.items() if _KEY_NAME.match(p.rsplit("/", 1)[-1]))


def layer_views(n: int) -> tuple[np.ndarray, list[list[memoryview]]]:
    """An engine-like destination for `load_into`: n blocks in one array, each block's layers as
    separate writable byte views (as an engine's per-layer KV slots)."""
    dest = np.zeros((n, *SHAPE), dtype=np.float32)
    return dest, [[memoryview(dest[i, layer]).cast("B") for layer in range(SHAPE[0])] for i in range(n)]
