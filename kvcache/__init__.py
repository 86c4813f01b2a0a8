"""chainfs.kvcache: prefix KV blocks on any fsspec filesystem.

    ns = KVNamespace(model="tiny", dtype="float32", layout="L2.KV.H2.T.D16", block_tokens=64)
    store = KVBlockStore.from_url("chainfs://127.0.0.1:9000/kv", ns, capacity_bytes=1 << 30)
    found = store.lookup(tokens)          # one batched stat (StatMany on chainfs)
    blocks = store.load(found)            # no second stat: one batched read, every block verified
    store.store(tokens, new_blocks, start_block=found.hit_blocks)

`KVNamespace` was called `Namespace` before; that name still imports, with a DeprecationWarning.
"""

import warnings
from typing import Any

from chainfs.kvcache.blockformat import CorruptBlock
from chainfs.kvcache.hashing import KVNamespace, block_keys
from chainfs.kvcache.stats import CacheStats
from chainfs.kvcache.store import KVBlockStore, Lookup

__all__ = ["CacheStats", "CorruptBlock", "KVBlockStore", "KVNamespace", "Lookup", "block_keys"]


def __getattr__(name: str) -> Any:
    """The old name `Namespace` of `KVNamespace`, for code written against it."""
    if name == "Namespace":
        warnings.warn("chainfs.kvcache.Namespace is now chainfs.kvcache.KVNamespace", DeprecationWarning,
                      stacklevel=2)
        return KVNamespace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
