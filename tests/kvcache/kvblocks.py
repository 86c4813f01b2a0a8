"""Deterministic blocks and tokens for the KV block store tests.

A module of its own (not conftest): spawned child processes import the test modules again, and
`conftest` would then resolve to whichever tests folder's conftest comes first on sys.path.
"""

from __future__ import annotations

import fsspec
import numpy as np

from chainfs.kvcache import KVBlockStore, Namespace

B = 8
SHAPE = (2, 2, 2, B, 4)  # (layers, K/V, kv heads, tokens, head_dim)


def block_for(key_seed: int) -> np.ndarray:
    """A block whose content is a function of one integer, so readers can verify what they got."""
    return np.random.default_rng(key_seed).standard_normal(SHAPE).astype(np.float32)


def tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n)


def open_store(fs: fsspec.AbstractFileSystem, root: str, ns: Namespace, **kw) -> KVBlockStore:
    return KVBlockStore(fs, root, ns, **kw)
