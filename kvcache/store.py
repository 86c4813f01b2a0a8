"""KVBlockStore: prefix KV blocks on any fsspec filesystem (chainfs, `file`, `memory`, ...).

Why this shape:
- Blocks are packed into segment files, runs of consecutive blocks found by their last block's
  key (`segments.py`): one file write per segment, one read per stretch of a segment.
- `lookup` decides hits from ONE batched stat of every full block's path of the prompt (on chainfs
  one `StatMany` round trip, whatever the number of blocks; no header reads): a segment file found
  at block i's path holds blocks i-m+1 .. i, m from its length. Where each block is (inode, offset)
  rides in the `Lookup`, so `load` does not stat again: it reads every hit block in one batched
  call (on chainfs one batched read per storage node) and verifies each (checksum, key, length).
- Blocks never change once written (the path is the key of their content), so the store keeps
  their refs (inodes) in a bounded cache and a repeated lookup costs no round trip; a block that
  vanished since (evicted by another engine) reads as missing, and is then a miss, never an error
  or other bytes.
- A block appears whole or not at all: on chainfs a batch of segment files is one batched open and
  one batched close, each file visible at close (after its bytes are durable on every replica); on
  the local filesystem each is written to a temporary name and renamed over its final path.
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
from dataclasses import dataclass, field
from typing import Any, Sequence

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from chainfs.kvcache import blockformat
from chainfs.kvcache.backends import BlockRef, backend_for
from chainfs.kvcache.blockformat import CorruptBlock
from chainfs.kvcache.breaker import CircuitBreaker, GuardedBackend, StoreUnavailable, is_unreachable
from chainfs.kvcache.hashing import KVNamespace, block_keys
from chainfs.kvcache.index import LRUIndex, RefCache, file_time
from chainfs.kvcache.segments import covered, encode_segment, ranges, segment_blocks_for, split_run
from chainfs.kvcache.stats import CacheStats

log = logging.getLogger(__name__)
_KEY_NAME = re.compile(r"^[0-9a-f]{32}$")
_SIZE_NAME = re.compile(r"^block-bytes-([0-9]+)$")  # an empty file naming the namespace's block size
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
    """Segments live at `<root>/<namespace dir>/<ab>/<cd>/<key hex of their last block>`.

    `segment_blocks`: at most this many blocks per segment file (1: a file per block; None: as
    `segments.segment_blocks_for` picks from the block size). `block_bytes`: a block file's size,
    if the caller knows it (otherwise learned from the first block stored, loaded or found)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, namespace: KVNamespace,
                 capacity_bytes: int | None = None, refresh_interval: float = 30.0,
                 ref_cache_blocks: int = 65536, segment_blocks: int | None = None,
                 block_bytes: int | None = None) -> None:
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
        self.segment_blocks = segment_blocks
        self.block_bytes = block_bytes
        self._size_marked = False  # whether the store holds our block-bytes file
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
    def from_url(cls, url: str, namespace: KVNamespace, **kwargs: Any) -> "KVBlockStore":
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
        for ref in refs:
            if ref is None:
                break
            if not hits or ref.path != refs[hits - 1].path:  # type: ignore[union-attr]
                self.index.refresh(_name(ref.path))
            hits += 1
        query_tokens = len(keys) * self.block_tokens if query_tokens is None else query_tokens
        self.stats.add(queries=1, query_tokens=query_tokens, query_blocks=len(keys),
                       hit_blocks=hits, hit_tokens=hits * self.block_tokens)
        return Lookup(keys, hits, self.block_tokens, tuple(refs[:hits]))  # type: ignore[arg-type]

    def drop_cached_refs(self) -> None:
        """Forgets every cached block inode, as a restarted or another engine starts (benchmarks)."""
        self._refs.clear()

    def _refs_of(self, keys: list[bytes], what: str) -> list[BlockRef | None]:
        """Each block's ref (None: not stored), from the cache or ONE stat of all the others' paths."""
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
        found: list[BlockRef | None] = [None] * len(keys)
        failure: BaseException | None = None
        for i, st in zip(todo, stats):
            if isinstance(st, BlockRef):
                found[i] = st
            elif isinstance(st, FileNotFoundError):
                self.index.discard(keys[i].hex())  # no segment ends here (any more)
            else:
                failure = st
        if failure is not None:  # counted once per call, not once per block
            self._backend_error(what, failure)
        first = next((f for f in found if f is not None), None)
        if first is None or not self._know_block_bytes(first, what):
            return refs
        for i, seg in enumerate(found):
            if seg is None:
                continue
            if seg.size <= blockformat.HEADER_SIZE or seg.size % self.block_bytes:  # type: ignore[operator]
                self._corrupt(seg.path, keys[i], CorruptBlock(f"segment of {seg.size} bytes holds no whole "
                                                              f"blocks of {self.block_bytes}"))
                found[i] = None
            else:
                self.index.touch(_name(seg.path), seg.size)
        out = covered(found, refs, self.block_bytes)  # type: ignore[arg-type]
        for i in todo:
            if out[i] is not None:
                self._refs.put(keys[i], out[i])  # type: ignore[arg-type]
        return out

    def _know_block_bytes(self, seg: BlockRef, what: str) -> bool:
        """Learns a block file's size (once per store) from the header of a segment's first block."""
        if self.block_bytes:
            return True
        try:
            (head,) = self.backend.read_many([BlockRef(seg.path, blockformat.HEADER_SIZE, seg.handle)])
            if isinstance(head, BaseException):
                raise head
            self.block_bytes = blockformat.decode_header(bytes(head)).total_size
        except FileNotFoundError:
            return False
        except CorruptBlock as exc:
            self._corrupt(seg.path, bytes.fromhex(_name(seg.path)), exc)
            return False
        except Exception as exc:  # noqa: BLE001
            self._backend_error(what, exc)
            return False
        return True

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
        stretches = ranges(refs)  # type: ignore[arg-type]
        try:
            blobs = self.backend.read_many([r for r, _ in stretches])
        except Exception as exc:  # noqa: BLE001
            self._backend_error("load", exc)
            return []
        out: list[np.ndarray] = []
        nbytes = at = 0
        for (stretch, count), blob in zip(stretches, blobs):
            if isinstance(blob, FileNotFoundError):
                self.stats.add(load_missing=1)
                self._forget(keys[at], stretch.path)
                break
            if isinstance(blob, EOFError):  # the file is shorter than it was: cut or replaced
                self._corrupt(stretch.path, keys[at], CorruptBlock(str(blob)))
                break
            if isinstance(blob, BaseException):
                self._backend_error("load", blob)
                self._forget(keys[at], stretch.path)
                break
            size, view = stretch.size // count, memoryview(blob)
            for j in range(count):
                key = keys[at]
                try:  # ours (not bytes): kept as the array, no copy
                    arr = blockformat.decode(view[j * size:(j + 1) * size], key, copy=isinstance(blob, bytes))
                except CorruptBlock as exc:
                    self._corrupt(stretch.path, key, exc)
                    break
                out.append(arr)
                nbytes += size
                at += 1
            else:
                self.index.refresh(_name(stretch.path))
                continue
            break
        for later in keys[len(out):]:  # blocks past a bad one: ask the store again next time
            self._refs.pop(later)
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
        """Writes one run of consecutive blocks of a prompt by key (`keys[i]` is the key of
        `blocks[i]`, block i + 1 follows block i), skipping those known present."""
        return self.store_runs([(keys, blocks)])

    def holds(self, key: bytes) -> bool:
        """Whether the block is known to be stored (by this store's writes, lookups or listing)."""
        return self._refs.get(key) is not None or key.hex() in self.index

    def store_runs(self, runs: Sequence[tuple[Sequence[bytes], Sequence[np.ndarray]]]) -> int:
        """Writes several runs (see `store_blocks`) in one batched write; returns blocks written.

        Each run's blocks not known present are packed into segments (`segments.py`), so a run
        must be consecutive blocks of one prompt: a segment is found by its last block's key."""
        segments: dict[str, tuple[list[bytes], list[np.ndarray]]] = {}
        skipped = 0
        for keys, blocks in runs:
            stretch: list[tuple[bytes, np.ndarray]] = []
            for k, kv in [*zip(keys, blocks), (None, None)]:
                if k is not None and not self.holds(k):
                    stretch.append((k, kv))
                    continue
                skipped += k is not None
                if not stretch:
                    continue
                self.block_bytes = self.block_bytes or blockformat.encoded_size(stretch[0][1])
                per = self.segment_blocks or segment_blocks_for(self.block_bytes, self.block_tokens)
                for seg in split_run(stretch, per):
                    path = self.path_of(seg[-1][0])
                    if len(seg) > len(segments.get(path, ((), ()))[0]):  # two runs end alike: keep the longer
                        segments[path] = ([k for k, _ in seg], [b for _, b in seg])
                stretch = []
        written = nbytes = 0
        if segments:
            blobs = {path: encode_segment(keys, kvs, self.block_tokens) for path, (keys, kvs) in segments.items()}
            if not self._size_marked:  # so a lookup in a fresh store need not read a header
                blobs[f"{self.dir}/block-bytes-{self.block_bytes}"] = b""
            try:
                results: list[BlockRef | Exception] = self.backend.write_many(blobs)
            except Exception as exc:  # noqa: BLE001
                results = [exc] * len(blobs)
            failure: Exception | None = None
            for (path, (keys, kvs)), result in zip(segments.items(), results):
                if isinstance(result, Exception):
                    failure = result
                    continue
                self.index.touch(_name(path), len(blobs[path]))
                at = 0
                for key, kv in zip(keys, kvs):
                    size = blockformat.encoded_size(kv)
                    self._refs.put(key, BlockRef(path, size, result.handle, at))
                    at += size
                written += len(keys)
                nbytes += at
            if failure is not None:
                self._backend_error("store", failure)
            self._size_marked = self._size_marked or not isinstance(results[-1], Exception)
        if written:
            self.stats.add(stored_blocks=written, bytes_written=nbytes)
        self.stats.add(skipped_blocks=skipped)
        if self.capacity_bytes is not None:
            self._maybe_refresh()
            self.evict()
        return written

    # -- capacity -------------------------------------------------------------------------------

    def evict(self) -> int:
        """Removes least recently used segments until the store fits its capacity."""
        if self.capacity_bytes is None:
            return 0
        victims = self.index.victims(self.capacity_bytes)
        if not victims:
            return 0
        for v in victims:
            self._refs.pop_path(self.path_of(bytes.fromhex(v)))
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
                entries[name] = (int(info.get("size") or 0), file_time(info))
            elif (marker := _SIZE_NAME.match(name)) and path.rsplit("/", 2)[-2] == self.namespace.dirname:
                size = int(marker.group(1))
                self.block_bytes = self.block_bytes or size
                self._size_marked = self._size_marked or size == self.block_bytes
            elif ".tmp-" in name and self._local and now - file_time(info) > _STALE_TMP_S:
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
        self._forget(key, path)

    def _forget(self, key: bytes, path: str | None = None) -> None:
        """A block found missing or bad in the file at `path`: neither its ref, nor those of the
        file's other blocks, nor the file's index entry may be trusted."""
        self._refs.pop(key)
        if path is not None:
            self._refs.pop_path(path)
            self.index.discard(_name(path))
        else:
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


def _name(path: str) -> str:
    """A segment file's index name: its last block's key, in hex."""
    return path.rsplit("/", 1)[-1]
