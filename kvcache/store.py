"""KVBlockStore: prefix KV blocks on any fsspec filesystem (chainfs, `file`, `memory`, ...).

Why this shape:
- `lookup` decides hits from ONE batched stat of every full block of the prompt (on chainfs one
  `StatMany` round trip, whatever the number of blocks; no header reads): a block file that exists
  with more than a header is a hit. What the stat returned (the inode) rides in the `Lookup`, so
  `load` does not stat again: it reads every hit block in one batched call (on chainfs one batched
  read per storage node) and verifies each (checksum, key, length) before returning it.
- Blocks never change once written (the path is the key of their content), so the store keeps
  their refs (inodes) in a bounded cache and a repeated lookup costs no round trip; a block that
  vanished since (evicted by another engine) reads as missing, and is then a miss, never an error
  or other bytes.
- A block appears whole or not at all: on chainfs a batch of block files is one batched open and
  one batched close, each file visible at close; on the local filesystem each is written to a
  temporary name and renamed over its final path.
- Backend failures never propagate: they are counted, logged, and turned into misses, so an
  engine keeps serving (recomputing) while the store is away and hits again when it returns.
  Every backend call goes through a circuit breaker (`breaker.py`): once the backend is
  unreachable, calls are skipped at once (counted as `unavailable`) until a background probe
  succeeds, and chainfs URLs get short deadlines, so a request never waits out the metaserver.
- Several processes may share the store: every write is atomic and every read is verified, so
  the worst an interleaving can do is turn a hit into a miss (e.g. a block evicted between lookup
  and load), never hand out a corrupt block.
- Callers that look up and then store the same prompt hash it once: `keys_of` and the `keys=`
  arguments.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from chainfs.kvcache import blockformat
from chainfs.kvcache.backends import BlockRef, backend_for
from chainfs.kvcache.blockformat import CorruptBlock
from chainfs.kvcache.breaker import CircuitBreaker, GuardedBackend, StoreUnavailable, is_unreachable
from chainfs.kvcache.hashing import Namespace, block_keys
from chainfs.kvcache.index import LRUIndex
from chainfs.kvcache.stats import CacheStats

log = logging.getLogger(__name__)
_KEY_NAME = re.compile(r"^[0-9a-f]{32}$")
_STALE_TMP_S = 600.0
# chainfs options of a store opened by URL: a cache call gives up fast (a miss is cheap, a stalled
# engine is not); the breaker then skips the backend until its probe (every PROBE_S) succeeds.
CHAINFS_OPTIONS = {"retry_deadline": 0.5, "meta_timeout": 1.0}
PROBE_S = 1.0


@dataclass(frozen=True)
class Lookup:
    """Result of `lookup`: the keys of the prompt's full blocks and how many lead as hits."""

    keys: list[bytes]
    hit_blocks: int
    block_tokens: int
    refs: tuple[BlockRef, ...] = field(default=(), compare=False, repr=False)  # of the hit blocks

    @property
    def hit_tokens(self) -> int:
        return self.hit_blocks * self.block_tokens


class KVBlockStore:
    """Blocks live at `<root>/<namespace dir>/<ab>/<cd>/<key hex>`."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, namespace: Namespace,
                 capacity_bytes: int | None = None, refresh_interval: float = 30.0,
                 ref_cache_blocks: int = 65536) -> None:
        self.breaker = CircuitBreaker(self._probe, PROBE_S, name="kv store")
        self.fs = fs
        self.namespace = namespace
        self.capacity_bytes = capacity_bytes if capacity_bytes and capacity_bytes > 0 else None
        self.refresh_interval = refresh_interval
        self.dir = f"{fs._strip_protocol(root).rstrip('/')}/{namespace.dirname}"
        self.breaker.name = f"kv store {self.dir}"
        self.stats = CacheStats()
        self.index = LRUIndex()
        self._refs = RefCache(ref_cache_blocks)
        self._refresh_lock = threading.Lock()
        self._next_refresh = 0.0
        self.rebuild_index()

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs

    @fs.setter
    def fs(self, fs: fsspec.AbstractFileSystem) -> None:
        self._fs = fs
        # Every backend call (and the listing) goes through the breaker: fail fast while away.
        self.backend = GuardedBackend(backend_for(fs), self.breaker)
        self._listing = GuardedBackend(fs, self.breaker)
        self._local = isinstance(fs, LocalFileSystem)

    @classmethod
    def from_url(cls, url: str, namespace: Namespace, **kwargs: Any) -> "KVBlockStore":
        """`chainfs://HOST:PORT/dir`, `file:///dir`, `memory://dir`, or any fsspec URL."""
        options = dict(CHAINFS_OPTIONS) if url.startswith("chainfs://") else {}
        fs, path = fsspec.core.url_to_fs(url, **options)
        return cls(fs, path, namespace, **kwargs)

    @property
    def block_tokens(self) -> int:
        return self.namespace.block_tokens

    def path_of(self, key: bytes) -> str:
        h = key.hex()
        return f"{self.dir}/{h[:2]}/{h[2:4]}/{h}"

    def keys_of(self, tokens: Sequence[int] | np.ndarray, salt: str | bytes | None = None) -> list[bytes]:
        """The block keys of `tokens` (hash a prompt once, pass them to lookup and store); a
        tenant's `salt` (vLLM's cache_salt) gives keys no other salt shares."""
        return block_keys(self.namespace, tokens, salt)

    # -- reads ----------------------------------------------------------------------------------

    def lookup(self, tokens: Sequence[int] | np.ndarray, keys: list[bytes] | None = None) -> Lookup:
        """How many leading full blocks of `tokens` are cached: at most one batched stat.

        `keys` (from `keys_of` of these tokens, or of a longer prompt they start) saves hashing."""
        n_blocks = len(tokens) // self.block_tokens
        keys = block_keys(self.namespace, tokens) if keys is None else keys[:n_blocks]
        return self.lookup_keys(keys, len(tokens))

    def lookup_keys(self, keys: list[bytes], query_tokens: int | None = None) -> Lookup:
        """`lookup` by block keys: how many leading blocks are stored."""
        refs = self._refs_of(keys, "lookup")
        hits = 0
        for key, ref in zip(keys, refs):
            if ref is None:
                break
            self.index.touch(key.hex(), ref.size)
            hits += 1
        query_tokens = len(keys) * self.block_tokens if query_tokens is None else query_tokens
        self.stats.add(queries=1, query_tokens=query_tokens, query_blocks=len(keys),
                       hit_blocks=hits, hit_tokens=hits * self.block_tokens)
        return Lookup(keys, hits, self.block_tokens, tuple(refs[:hits]))  # type: ignore[arg-type]

    def drop_cached_refs(self) -> None:
        """Forgets every cached block inode, as a restarted or another engine starts (benchmarks)."""
        self._refs.clear()

    def _refs_of(self, keys: list[bytes], what: str) -> list[BlockRef | None]:
        """Each block's ref (None: not stored), from the cache or ONE stat of all the others."""
        refs: list[BlockRef | None] = [self._refs.get(k) for k in keys]
        todo = [i for i, r in enumerate(refs) if r is None]
        if not todo:
            return refs
        paths = [self.path_of(keys[i]) for i in todo]
        try:
            stats: list[BlockRef | Exception] = self.backend.stat_many(paths)
        except Exception as exc:  # noqa: BLE001 - any backend failure is a miss
            self._backend_error(what, exc)
            return refs  # the cached ones still count; the others are misses
        failure: BaseException | None = None
        for i, path, st in zip(todo, paths, stats):
            key = keys[i]
            if isinstance(st, BlockRef) and st.size > blockformat.HEADER_SIZE:
                refs[i] = st
                self._refs.put(key, st)
                continue
            if isinstance(st, BlockRef):
                self._corrupt(path, key, CorruptBlock(f"block file of {st.size} bytes has no payload"))
            else:
                if not isinstance(st, FileNotFoundError):
                    failure = st
                self.index.discard(key.hex())
        if failure is not None:  # counted once per call, not once per block
            self._backend_error(what, failure)
        return refs

    def load(self, found: Lookup, max_blocks: int | None = None) -> list[np.ndarray]:
        """The verified tensors of the leading hit blocks, in one batched read through the refs
        the lookup found (no second stat). Stops at the first block that is missing or corrupt,
        so the result is always a valid prefix."""
        n = found.hit_blocks if max_blocks is None else min(found.hit_blocks, max_blocks)
        if n <= 0:
            return []
        keys = found.keys[:n]
        refs: list[BlockRef | None] = list(found.refs[:n])
        if len(refs) < n:  # a Lookup made without refs: find them (one batched stat)
            refs += self._refs_of(keys[len(refs):], "load")
        if None in refs:
            refs = refs[:refs.index(None)]
        if not refs:
            return []
        try:
            blobs = self.backend.read_many(refs)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            self._backend_error("load", exc)
            return []
        out: list[np.ndarray] = []
        nbytes = 0
        for i, (key, ref, blob) in enumerate(zip(keys, refs, blobs)):
            if isinstance(blob, BaseException):
                if isinstance(blob, FileNotFoundError):
                    self.stats.add(load_missing=1)
                else:
                    self._backend_error("load", blob)
                self._forget(key)
            else:
                try:
                    arr = blockformat.decode(blob, key, copy=isinstance(blob, bytes))  # else ours: kept
                except CorruptBlock as exc:
                    self._corrupt(ref.path, key, exc)  # type: ignore[union-attr]
                else:
                    nbytes += len(blob)
                    self.index.touch(key.hex(), len(blob))
                    out.append(arr)
                    continue
            for later in keys[i + 1:]:  # blocks past a bad one: ask the store again next time
                self._refs.pop(later)
            break
        self.stats.add(loaded_blocks=len(out), loaded_tokens=len(out) * self.block_tokens, bytes_read=nbytes)
        return out

    # -- writes ---------------------------------------------------------------------------------

    def store(self, tokens: Sequence[int] | np.ndarray, blocks: Sequence[np.ndarray],
              start_block: int = 0, keys: list[bytes] | None = None) -> int:
        """Writes the KV of full blocks `start_block ..` of `tokens` (`blocks[i]` is block
        `start_block + i`) that the store does not already hold; returns how many were written.
        `keys`: the keys of `tokens` if the caller has them (see `keys_of`)."""
        keys = block_keys(self.namespace, tokens) if keys is None else keys
        return self.store_blocks(keys[start_block:start_block + len(blocks)], blocks)

    def store_blocks(self, keys: Sequence[bytes], blocks: Sequence[np.ndarray]) -> int:
        """Writes blocks by key (`keys[i]` is the key of `blocks[i]`), skipping those known present."""
        todo = {self.path_of(k): (k, blockformat.encode(k, kv, self.block_tokens))
                for k, kv in zip(keys, blocks) if k.hex() not in self.index}
        skipped = len(keys) - len(todo)
        written = nbytes = 0
        if todo:
            blobs = {path: blob for path, (_, blob) in todo.items()}
            try:
                results: list[BlockRef | Exception] = self.backend.write_many(blobs)
            except Exception as exc:  # noqa: BLE001
                results = [exc] * len(blobs)
            failure: Exception | None = None
            for (key, blob), result in zip(todo.values(), results):
                if isinstance(result, Exception):
                    failure = result
                    continue
                self.index.touch(key.hex(), len(blob))
                self._refs.put(key, result)
                written += 1
                nbytes += len(blob)
            if failure is not None:
                self._backend_error("store", failure)
        if written:
            self.stats.add(stored_blocks=written, bytes_written=nbytes)
        self.stats.add(skipped_blocks=skipped)
        if self.capacity_bytes is not None:
            self._maybe_refresh()
            self.evict()
        return written

    # -- capacity -------------------------------------------------------------------------------

    def evict(self) -> int:
        """Removes least recently used blocks until the store fits its capacity."""
        if self.capacity_bytes is None:
            return 0
        victims = self.index.victims(self.capacity_bytes)
        if not victims:
            return 0
        for v in victims:
            self._refs.pop(bytes.fromhex(v))
        try:
            self.backend.remove_many([self.path_of(bytes.fromhex(v)) for v in victims])
        except Exception as exc:  # noqa: BLE001
            self._backend_error("evict", exc)
        self.stats.add(evictions=len(victims))
        return len(victims)

    def rebuild_index(self) -> bool:
        """Lists the store and rebuilds the LRU index from it (file times give the initial order)."""
        try:
            listing = self._listing.find(self.dir, detail=True)
        except FileNotFoundError:
            listing = {}
        except Exception as exc:  # noqa: BLE001
            self._backend_error("rebuild index", exc)
            self._next_refresh = time.monotonic() + min(2.0, self.refresh_interval)
            return False
        entries: dict[str, tuple[int, float]] = {}
        now = time.time()
        for path, info in listing.items():
            name = path.rsplit("/", 1)[-1]
            if _KEY_NAME.match(name):
                entries[name] = (int(info.get("size") or 0), _file_time(info))
            elif ".tmp-" in name and self._local and now - _file_time(info) > _STALE_TMP_S:
                try:  # a writer died between write and rename
                    self.fs.rm_file(path)
                except OSError:
                    pass
        self.index.replace(entries)
        self._next_refresh = time.monotonic() + self.refresh_interval
        log.debug("kv index rebuilt: %d blocks, %d bytes", len(self.index), self.index.total_bytes)
        return True

    def _maybe_refresh(self) -> None:
        if time.monotonic() >= self._next_refresh and self._refresh_lock.acquire(blocking=False):
            try:
                self.rebuild_index()
            finally:
                self._refresh_lock.release()

    # -- failures -------------------------------------------------------------------------------

    def _corrupt(self, path: str, key: bytes, exc: Exception) -> None:
        """Counted and dropped from the index, so the engine recomputes and `store` rewrites it."""
        log.warning("kv block %s is corrupt (%s): treating as a miss", path, exc)
        self.stats.add(corrupt_blocks=1)
        self._forget(key)

    def _forget(self, key: bytes) -> None:
        """A block found missing or bad: neither its ref nor its index entry may be trusted."""
        self._refs.pop(key)
        self.index.discard(key.hex())

    def _backend_error(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, StoreUnavailable):  # skipped at once: the breaker is open
            self.stats.add(unavailable=1)
            return
        log.warning("kv store %s failed: %s: %s", what, type(exc).__name__, exc)
        self.stats.add(errors=1, unavailable=int(is_unreachable(exc)))

    def _probe(self) -> None:
        """The breaker's question "is the backend back?": one metadata call (missing is fine)."""
        try:
            self.fs.info(self.dir)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Stops the breaker's probing (a dropped store)."""
        self.breaker.close()


class RefCache:
    """key -> BlockRef of blocks known to exist, least recently used dropped first. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._refs: OrderedDict[bytes, BlockRef] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> BlockRef | None:
        with self._lock:
            ref = self._refs.get(key)
            if ref is not None:
                self._refs.move_to_end(key)
            return ref

    def put(self, key: bytes, ref: BlockRef) -> None:
        if not self.capacity:
            return
        with self._lock:
            self._refs[key] = ref
            self._refs.move_to_end(key)
            while len(self._refs) > self.capacity:
                self._refs.popitem(last=False)

    def pop(self, key: bytes) -> None:
        with self._lock:
            self._refs.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._refs.clear()


def _file_time(info: dict[str, Any]) -> float:
    for field in ("mtime", "last_access", "atime", "created", "LastModified"):
        value = info.get(field)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return 0.0
