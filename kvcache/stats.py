"""Counters of one store instance, safe to bump from several threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class CacheStats:
    queries: int = 0          # lookup calls
    query_tokens: int = 0     # tokens offered to lookup
    query_blocks: int = 0     # full blocks offered to lookup
    hit_tokens: int = 0       # leading tokens found cached
    hit_blocks: int = 0
    loaded_blocks: int = 0    # blocks returned by load (verified)
    loaded_tokens: int = 0
    load_missing: int = 0     # blocks that lookup saw but were gone at load (evicted meanwhile)
    stored_blocks: int = 0
    skipped_blocks: int = 0   # store() calls for blocks already known present
    bytes_read: int = 0
    bytes_written: int = 0
    evictions: int = 0
    corrupt_blocks: int = 0   # detected corrupt or truncated blocks (treated as misses)
    errors: int = 0           # backend failures (store unreachable, I/O errors)
    unavailable: int = 0      # calls that found the backend unreachable, or skipped it at once after
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
