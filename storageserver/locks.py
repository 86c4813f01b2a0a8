"""Per-chunk locks: every mutation of one chunk (writes, removal, resync) runs under its lock.

The storage node owns one `KeyedLocks` and hands it to the replicator and the resyncer, so a
resync never interleaves with a client write of the same chunk.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Hashable, Iterator

from chainfs.common.errors import ChainfsError, Reason


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._locks: dict[Hashable, list] = {}

    @contextlib.contextmanager
    def hold(self, key: Hashable, timeout: float = -1) -> Iterator[None]:
        with self._mu:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            if not entry[0].acquire(timeout=timeout):
                raise ChainfsError(Reason.BUSY, f"chunk {key} is busy")
            try:
                yield
            finally:
                entry[0].release()
        finally:
            with self._mu:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]
