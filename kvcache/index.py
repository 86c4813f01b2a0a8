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


class LRUIndex:
    """path -> size, ordered from least to most recently accessed. Thread-safe."""

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
