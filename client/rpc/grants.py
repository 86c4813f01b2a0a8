"""The client's chunk capabilities (common/capabilities.py), kept per inode and refreshed in time.

Why a cache beside the RPC layers rather than capabilities passed by every caller: the metaserver
hands out a capability with each file inode it returns (Stat, StatMany: read; OpenWrite,
OpenWriteMany, RenewSession: read, write, remove), and the storage layer is called with inode ids.
MetaClient records each capability here with how to get a new one (stat the path again, or renew
the session); StorageClient takes the one it needs for each chunk request. A capability whose life
is three quarters spent is refreshed before use, and one a node refuses (expired on a skewed clock,
say) once more, so long-running readers and writers never see their capabilities lapse.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from chainfs.common import capabilities

log = logging.getLogger(__name__)

MAX_ENTRIES = 65536
REFRESH_AT = 0.25  # refresh once less than this fraction of a capability's life is left


@dataclass
class _Entry:
    text: str
    refresh: Callable[[], object] | None
    learned: float = field(default_factory=time.time)
    expires: float | None = None  # parsed on first use
    lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self, now: float) -> bool:
        if self.expires is None:
            cap = capabilities.peek(self.text)
            self.expires = cap.expires_ms / 1000 if cap is not None else now
        life = max(self.expires - self.learned, 0.0)
        return self.expires - now <= life * REFRESH_AT


class CapabilityCache:
    """inode -> the capabilities this client holds for it, by rights ("r", or "rwd" for sessions)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, str], _Entry] = OrderedDict()
        self.max_entries = max_entries
        self.refreshes = 0

    def learn(self, inode_id: int, text: str, rights: str, refresh: Callable[[], object] | None = None) -> None:
        """Records `text` (a capability for `inode_id` with `rights`); `refresh` gets a new one
        (and learns it). Empty text (an insecure cluster) is ignored."""
        if not text:
            return
        with self._lock:
            self._entries[(inode_id, rights)] = _Entry(text, refresh)
            self._entries.move_to_end((inode_id, rights))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def _find(self, inode_id: int, right: str) -> tuple[tuple[int, str], _Entry] | None:
        with self._lock:
            for rights in (capabilities.READ, capabilities.SESSION_RIGHTS) if right == capabilities.READ \
                    else (capabilities.SESSION_RIGHTS,):
                entry = self._entries.get((inode_id, rights))
                if entry is not None:
                    return (inode_id, rights), entry
        return None

    def get(self, inode_id: int, right: str) -> str:
        """The capability to use for `right` on `inode_id` ("" when none is held), refreshed first
        when most of its life is spent."""
        found = self._find(inode_id, right)
        if found is None:
            return ""
        key, entry = found
        if entry.refresh is not None and entry.due(time.time()):
            self._refresh(key, entry)
            found = self._find(inode_id, right)
            if found is not None:
                entry = found[1]
        return entry.text

    def refresh(self, inode_id: int, right: str) -> bool:
        """Gets a new capability after a node refused the held one; False when there is no way to."""
        found = self._find(inode_id, right)
        if found is None or found[1].refresh is None:
            return False
        self._refresh(*found, forced=True)
        now = self._find(inode_id, right)
        return now is not None and now[1] is not found[1]

    def _refresh(self, key: tuple[int, str], entry: _Entry, forced: bool = False) -> None:
        with entry.lock:  # one refresh per capability, however many chunk requests wait for it
            with self._lock:
                current = self._entries.get(key)
            if current is not entry or (not forced and not entry.due(time.time())):
                return  # another thread refreshed it meanwhile
            try:
                assert entry.refresh is not None
                entry.refresh()
                self.refreshes += 1
            except Exception as exc:  # noqa: BLE001 - the old capability is used; a node may refuse it
                log.debug("refreshing the capability for inode %d failed: %s", key[0], exc)
