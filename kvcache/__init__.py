"""chainfs.kvcache: prefix KV blocks on any fsspec filesystem.

    ns = Namespace(model="tiny", dtype="float32", layout="L2.KV.H2.T.D16", block_tokens=64)
    store = KVBlockStore.from_url("chainfs://127.0.0.1:9000/kv", ns, capacity_bytes=1 << 30)
    found = store.lookup(tokens)          # one batched stat (StatMany on chainfs)
    blocks = store.load(found)            # no second stat: one batched read, every block verified
    store.store(tokens, new_blocks, start_block=found.hit_blocks)
"""

from chainfs.kvcache.blockformat import CorruptBlock
from chainfs.kvcache.hashing import Namespace, block_keys
from chainfs.kvcache.stats import CacheStats
from chainfs.kvcache.store import KVBlockStore, Lookup

__all__ = ["CacheStats", "CorruptBlock", "KVBlockStore", "Lookup", "Namespace", "block_keys"]
