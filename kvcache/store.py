"""KVBlockStore: prefix KV blocks on any fsspec filesystem (chainfs, `file`, `memory`, ...).

Why this shape:
- `lookup` probes the headers of every full block of the prompt in ONE batched `cat_ranges`
  call, so a prompt of N blocks costs one round trip, not N; `load` fetches the hit blocks in one
  batched `cat` call and verifies each (checksum, key, length) before returning it.
- A block appears whole or not at all: on chainfs a `wb` file becomes visible at close; on the
  local filesystem it is written to a temporary name and renamed over its final path.
- Backend failures never propagate: they are counted, logged, and turned into misses, so an
  engine keeps serving (recomputing) while the store is away and hits again when it returns.
- Several processes may share the store: every write is atomic and every read is verified, so
  the worst an interleaving can do is turn a hit into a miss (e.g. a block evicted between lookup
  and load), never hand out a corrupt block.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from chainfs.kvcache import blockformat
from chainfs.kvcache.blockformat import CorruptBlock
from chainfs.kvcache.hashing import Namespace, block_keys
from chainfs.kvcache.index import LRUIndex
from chainfs.kvcache.stats import CacheStats

log = logging.getLogger(__name__)
_KEY_NAME = re.compile(r"^[0-9a-f]{32}$")
_STALE_TMP_S = 600.0


@dataclass(frozen=True)
class Lookup:
    """Result of `lookup`: the keys of the prompt's full blocks and how many lead as hits."""

    keys: list[bytes]
    hit_blocks: int
    block_tokens: int

    @property
    def hit_tokens(self) -> int:
        return self.hit_blocks * self.block_tokens


class KVBlockStore:
    """Blocks live at `<root>/<namespace dir>/<ab>/<cd>/<key hex>`."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, namespace: Namespace,
                 capacity_bytes: int | None = None, refresh_interval: float = 30.0) -> None:
        self.fs = fs
        self.namespace = namespace
        self.capacity_bytes = capacity_bytes if capacity_bytes and capacity_bytes > 0 else None
        self.refresh_interval = refresh_interval
        self.dir = f"{fs._strip_protocol(root).rstrip('/')}/{namespace.dirname}"
        self.stats = CacheStats()
        self.index = LRUIndex()
        self._local = isinstance(fs, LocalFileSystem)
        self._refresh_lock = threading.Lock()
        self._next_refresh = 0.0
        self.rebuild_index()

    @classmethod
    def from_url(cls, url: str, namespace: Namespace, **kwargs: Any) -> "KVBlockStore":
        """`chainfs://HOST:PORT/dir`, `file:///dir`, `memory://dir`, or any fsspec URL."""
        fs, path = fsspec.core.url_to_fs(url)
        return cls(fs, path, namespace, **kwargs)

    @property
    def block_tokens(self) -> int:
        return self.namespace.block_tokens

    def path_of(self, key: bytes) -> str:
        h = key.hex()
        return f"{self.dir}/{h[:2]}/{h[2:4]}/{h}"

    # -- reads ----------------------------------------------------------------------------------

    def lookup(self, tokens: Sequence[int] | np.ndarray) -> Lookup:
        """How many leading full blocks of `tokens` are cached: one batched header probe."""
        keys = block_keys(self.namespace, tokens)
        hits = 0
        if keys:
            paths = [self.path_of(k) for k in keys]
            hdr = blockformat.HEADER_SIZE
            try:
                heads = self.fs.cat_ranges(paths, [0] * len(paths), [hdr] * len(paths), on_error="return")
            except Exception as exc:  # noqa: BLE001 - any backend failure is a miss
                self._backend_error("lookup", exc)
                heads = []
            leading = True  # every probed header updates the index; hits are the leading run
            failure: BaseException | None = None
            for key, path, head in zip(keys, paths, heads):
                ok = False
                if isinstance(head, BaseException):
                    if not isinstance(head, FileNotFoundError):
                        failure = head
                    self.index.discard(key.hex())
                else:
                    try:
                        header = blockformat.decode_header(bytes(head), key)
                        self.index.touch(key.hex(), header.total_size)
                        ok = True
                    except CorruptBlock as exc:
                        self._corrupt(path, key, exc)
                leading = leading and ok
                hits += leading
            if failure is not None:  # counted once per lookup, not once per block
                self._backend_error("lookup", failure)
        self.stats.add(queries=1, query_tokens=len(tokens), query_blocks=len(keys),
                       hit_blocks=hits, hit_tokens=hits * self.block_tokens)
        return Lookup(keys, hits, self.block_tokens)

    def load(self, found: Lookup, max_blocks: int | None = None) -> list[np.ndarray]:
        """The verified tensors of the leading hit blocks, in one batched read. Stops at the first
        block that is missing or corrupt, so the result is always a valid prefix."""
        n = found.hit_blocks if max_blocks is None else min(found.hit_blocks, max_blocks)
        if n == 0:
            return []
        keys = found.keys[:n]
        paths = [self.path_of(k) for k in keys]
        try:
            data = self.fs.cat(paths, on_error="return")
        except Exception as exc:  # noqa: BLE001
            self._backend_error("load", exc)
            return []
        if not isinstance(data, dict):  # a single path comes back as bytes
            data = {paths[0]: data}
        data = {self.fs._strip_protocol(p): v for p, v in data.items()}
        out: list[np.ndarray] = []
        nbytes = 0
        for key, path in zip(keys, paths):
            blob = data.get(path, FileNotFoundError(path))
            if isinstance(blob, BaseException):
                if isinstance(blob, FileNotFoundError):
                    self.stats.add(load_missing=1)
                else:
                    self._backend_error("load", blob)
                self.index.discard(key.hex())
                break
            try:
                arr = blockformat.decode(bytes(blob), key)
            except CorruptBlock as exc:
                self._corrupt(path, key, exc)
                break
            nbytes += len(blob)
            self.index.touch(key.hex(), len(blob))
            out.append(arr)
        self.stats.add(loaded_blocks=len(out), loaded_tokens=len(out) * self.block_tokens, bytes_read=nbytes)
        return out

    # -- writes ---------------------------------------------------------------------------------

    def store(self, tokens: Sequence[int] | np.ndarray, blocks: Sequence[np.ndarray],
              start_block: int = 0) -> int:
        """Writes the KV of full blocks `start_block ..` of `tokens` (`blocks[i]` is block
        `start_block + i`) that the store does not already hold; returns how many were written."""
        keys = block_keys(self.namespace, tokens)[start_block:start_block + len(blocks)]
        todo = {self.path_of(k): blockformat.encode(k, kv, self.block_tokens)
                for k, kv in zip(keys, blocks) if k.hex() not in self.index}
        skipped = len(keys) - len(todo)
        written = 0
        if todo:
            try:
                self._write(todo)
                written = len(todo)
            except Exception as exc:  # noqa: BLE001
                self._backend_error("store", exc)
        if written:
            for path, blob in todo.items():
                self.index.touch(path.rsplit("/", 1)[1], len(blob))
            self.stats.add(stored_blocks=written, bytes_written=sum(map(len, todo.values())))
        self.stats.add(skipped_blocks=skipped)
        if self.capacity_bytes is not None:
            self._maybe_refresh()
            self.evict()
        return written

    def _write(self, blobs: dict[str, bytes]) -> None:
        if self._local:
            for path, blob in blobs.items():
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as f:
                    f.write(blob)
                os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
            return
        try:
            self.fs.pipe(blobs)  # one batched call; chainfs makes each file visible at close
        except FileNotFoundError:  # a filesystem that wants parents made first
            for parent in {p.rsplit("/", 1)[0] for p in blobs}:
                self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe(blobs)

    # -- capacity -------------------------------------------------------------------------------

    def evict(self) -> int:
        """Removes least recently used blocks until the store fits its capacity."""
        if self.capacity_bytes is None:
            return 0
        victims = self.index.victims(self.capacity_bytes)
        if not victims:
            return 0
        paths = [self.path_of(bytes.fromhex(v)) for v in victims]
        try:
            self.fs.rm(paths)
        except Exception:  # noqa: BLE001 - some were already gone (another engine evicted them)
            for path in paths:
                try:
                    self.fs.rm_file(path)
                except FileNotFoundError:
                    pass
                except Exception as exc:  # noqa: BLE001
                    self._backend_error("evict", exc)
        self.stats.add(evictions=len(victims))
        return len(victims)

    def rebuild_index(self) -> bool:
        """Lists the store and rebuilds the LRU index from it (file times give the initial order)."""
        try:
            listing = self.fs.find(self.dir, detail=True)
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

    def disk_usage(self) -> int:
        """Bytes of block files in the store right now (a listing; for tests and reports)."""
        try:
            listing = self.fs.find(self.dir, detail=True)
        except FileNotFoundError:
            return 0
        return sum(int(i.get("size") or 0) for p, i in listing.items() if _KEY_NAME.match(p.rsplit("/", 1)[-1]))

    # -- failures -------------------------------------------------------------------------------

    def _corrupt(self, path: str, key: bytes, exc: Exception) -> None:
        """Counted and dropped from the index, so the engine recomputes and `store` rewrites it."""
        log.warning("kv block %s is corrupt (%s): treating as a miss", path, exc)
        self.stats.add(corrupt_blocks=1)
        self.index.discard(key.hex())

    def _backend_error(self, what: str, exc: BaseException) -> None:
        log.warning("kv store %s failed: %s: %s", what, type(exc).__name__, exc)
        self.stats.add(errors=1)


def _file_time(info: dict[str, Any]) -> float:
    for field in ("mtime", "last_access", "atime", "created", "LastModified"):
        value = info.get(field)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return 0.0
