"""Background scrub (docs/architecture.md, "Scrub and repair"): every committed chunk of every
serving local target is read and verified against its stored CRCs at a bounded rate, and a bad copy
is repaired from a good replica of its chain (`ChunkRepairer`).

Passes start every `interval` seconds (the first one `interval` after start); within a pass the
reads are paced so the node verifies at most `mib_s` MiB per second over all its targets. Chunks
that a read found corrupt (`suspect`) are verified and repaired first, without waiting for a pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Mapping

from chainfs.common.background import LoopThread
from chainfs.common.errors import ChainfsError
from chainfs.common.config import MiB
from chainfs.storageserver.chunk_ids import ChunkKey, key_of
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.metrics import record_scrub, record_scrub_pass
from chainfs.storageserver.repair import ChunkRepairer, check_copy
from chainfs.storageserver.routing import SERVING, ClusterRouting

log = logging.getLogger(__name__)

PAGE = 256
DEFAULT_MIB_S = 16.0
DEFAULT_INTERVAL = 600.0
MAX_SUSPECTS = 1024


class Scrubber:
    def __init__(self, routing: ClusterRouting, stores: Mapping[int, ChunkStore], repairer: ChunkRepairer,
                 mib_s: float = DEFAULT_MIB_S, interval: float = DEFAULT_INTERVAL) -> None:
        if mib_s < 0 or interval < 0:
            raise ValueError("scrub rate and interval must not be negative")
        self.routing = routing
        self.stores = stores
        self.repairer = repairer
        self.rate = mib_s * MiB
        self.interval = interval
        self._background = LoopThread("scrub", self._loop)
        self._stop = self._background.stopping
        self._wake = threading.Event()
        self._suspects: deque[tuple[int, int, ChunkKey]] = deque()
        self._queued: set[tuple[int, int, ChunkKey]] = set()  # each suspect once, however often reported
        self._budget_from = time.monotonic()
        self._spent = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def start(self) -> None:
        if self.enabled:
            self._background.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._background.stop()

    def suspect(self, chain_id: int, target_id: int, key: ChunkKey) -> None:
        """A read found this copy bad: verify and repair it soon (a bounded queue without repeats;
        what does not fit, the next pass finds)."""
        entry = (chain_id, target_id, key)
        if self.enabled and entry not in self._queued and len(self._queued) < MAX_SUSPECTS:
            self._queued.add(entry)
            self._suspects.append(entry)
            self._wake.set()

    def _loop(self) -> None:
        next_pass = time.monotonic() + self.interval
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_pass - time.monotonic()))
            self._wake.clear()
            try:
                self._drain_suspects()
                if time.monotonic() >= next_pass:
                    self.scrub_pass()
                    next_pass = time.monotonic() + self.interval
            except Exception:  # noqa: BLE001 - the scrubber must not die
                log.exception("scrub failed")
                next_pass = time.monotonic() + max(1.0, self.interval)

    def _drain_suspects(self) -> None:
        while self._suspects and not self._stop.is_set():
            entry = self._suspects.popleft()
            self._queued.discard(entry)
            chain_id, target_id, key = entry
            try:
                self.repairer.repair(chain_id, target_id, key, "read")
            except ChainfsError as exc:
                log.info("repair of suspect chunk %s failed: %s", key, exc.message)

    def _serving_targets(self) -> list[tuple[int, int]]:
        """(chain id, target id) of every local target that serves its chain now."""
        out = []
        for chain in self.routing.routing.chains:
            pos = self.routing.position(chain.chain_id)
            if pos is not None and pos.state == SERVING and pos.target_id in self.stores:
                out.append((pos.chain_id, pos.target_id))
        return out

    def scrub_pass(self) -> tuple[int, int, int]:
        """Verifies every committed chunk of the serving local targets once; returns (chunks,
        bytes, repaired)."""
        chunks = nbytes = repaired = 0
        for chain_id, target_id in self._serving_targets():
            store = self.stores[target_id]
            after: ChunkKey | None = None
            while not self._stop.is_set():
                page, more = store.list_chunks(0, after, PAGE)
                for meta in page:
                    if self._stop.is_set():
                        return chunks, nbytes, repaired
                    self._drain_suspects()
                    key = key_of(meta.chunk)
                    repaired += self._scrub_chunk(chain_id, target_id, store, key)
                    chunks += 1
                    nbytes += meta.length
                    self._pace(meta.length)
                if not more or not page:
                    break
                after = key_of(page[-1].chunk)
            if not self._stop.is_set():
                record_scrub_pass(target_id)
        return chunks, nbytes, repaired

    def _scrub_chunk(self, chain_id: int, target_id: int, store: ChunkStore, key: ChunkKey) -> int:
        meta, _, problem = check_copy(store, key)
        record_scrub(target_id, meta.length if meta is not None else 0, bool(problem))
        if not problem:
            return 0
        log.error("scrub: chain %d target %d chunk %s: %s", chain_id, target_id, key, problem)
        try:
            return int(self.repairer.repair(chain_id, target_id, key, "scrub"))
        except ChainfsError as exc:
            log.warning("scrub: chunk %s stays bad for now: %s", key, exc.message)
            return 0

    def _pace(self, nbytes: int) -> None:
        """Sleeps as long as needed to keep the verified bytes under the rate (a 1 s window)."""
        self._spent += nbytes
        now = time.monotonic()
        due = self._budget_from + self._spent / self.rate
        if due > now:
            self._stop.wait(due - now)
        elif now - self._budget_from > 1.0:
            self._budget_from, self._spent = now, 0  # idle time earns no burst
