"""The in-memory view of which blocks the store holds, their sizes and last access: an LRU.

Why in memory: capacity and eviction need sizes and recency without listing the store on every
write. The store itself stays the source of truth: the index is rebuilt from a listing at start
(so a restarted engine keeps its hits and its capacity accounting) and refreshed periodically to
learn of blocks written or evicted by other engines sharing the store.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from chainfs.kvcache.backends import BlockRef


def file_time(info: dict[str, Any]) -> float:
    """A listed file's time (whichever the filesystem reports), the index's first recency order."""
    for name in ("mtime", "last_access", "atime", "created", "LastModified"):
        value = info.get(name)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return 0.0


class LRUIndex:
    """name (a segment file's) -> size, ordered from least to most recently accessed. Thread-safe."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.rebuilt_at: float | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def touch(self, path: str, size: int) -> None:
        """Records an access (hit or write): the block becomes most recently used."""
        with self._lock:
            old = self._entries.pop(path, None)
            self._bytes += size - (old or 0)
            self._entries[path] = size

    def refresh(self, path: str) -> None:
        """Records an access to an entry of known size (no-op for one not indexed)."""
        with self._lock:
            if path in self._entries:
                self._entries.move_to_end(path)

    def discard(self, path: str) -> None:
        with self._lock:
            size = self._entries.pop(path, None)
            if size is not None:
                self._bytes -= size

    def victims(self, capacity: int, protect: set[str] = frozenset()) -> list[str]:
        """Removes and returns least recently used paths until the total fits in `capacity`."""
        out: list[str] = []
        with self._lock:
            for path in list(self._entries):
                if self._bytes <= capacity:
                    break
                if path in protect:
                    continue
                self._bytes -= self._entries.pop(path)
                out.append(path)
        return out

    def replace(self, listing: dict[str, tuple[int, float]]) -> None:
        """Rebuilds from a store listing {path: (size, last access time)}, keeping the recency of
        entries this process already knows (its own accesses are newer than file times)."""
        with self._lock:
            known = [p for p in self._entries if p in listing]
            fresh = sorted((p for p in listing if p not in self._entries), key=lambda p: listing[p][1])
            entries: OrderedDict[str, int] = OrderedDict()
            for path in fresh + known:  # file-time order first, then our own recency order
                entries[path] = listing[path][0]
            self._entries = entries
            self._bytes = sum(entries.values())
            self.rebuilt_at = time.monotonic()


class RefCache:
    """key -> BlockRef (where the block is: its range in a segment file) of blocks known to exist,
    least recently used dropped first. Thread-safe. Also knows which keys each file holds, so an
    evicted or vanished segment drops all of its blocks at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._refs: OrderedDict[bytes, BlockRef] = OrderedDict()
        self._by_path: dict[str, set[bytes]] = {}
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
            self._drop(key)
            self._refs[key] = ref
            self._by_path.setdefault(ref.path, set()).add(key)
            while len(self._refs) > self.capacity:
                self._drop(next(iter(self._refs)))

    def pop(self, key: bytes) -> None:
        with self._lock:
            self._drop(key)

    def pop_path(self, path: str) -> None:
        """Forgets every block of the file at `path`."""
        with self._lock:
            for key in list(self._by_path.get(path, ())):
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._refs.clear()
            self._by_path.clear()

    def _drop(self, key: bytes) -> None:
        ref = self._refs.pop(key, None)
        if ref is not None:
            keys = self._by_path.get(ref.path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_path[ref.path]
