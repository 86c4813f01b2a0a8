"""Write-behind of finished KV blocks: stores leave the request's critical path and the compute lock.

Why: a request's new blocks are only useful to LATER requests, so nothing should wait for them to
reach the store; before this, `store` ran inside the engine's compute lock and cost more than a
quarter of prefill compute in a load test. The engine hands the blocks (copied: the KV buffer they
come from is the request's) to a bounded queue and goes on; one thread writes them, coalescing
whatever has queued meanwhile into one batched store call (one batched open and close on chainfs).

- Bounded: at most `max_bytes` of KV wait; a job that does not fit is dropped and counted (a cache
  may lose a block; it must never stall or grow an engine without bound).
- Duplicates dropped: a block whose key is queued or already in the store's index is not queued
  again (concurrent requests with one prefix finish the same blocks).
- Shutdown drains within a deadline; what is left after it is dropped and counted.
- A caller may wait for its own blocks (`Submitted.wait`) AFTER it has released the compute lock
  and sent its first token: the engine answers a request once its blocks are stored (bounded), so
  the next turn of a conversation finds them on any engine, while no request's TTFT and no other
  request's compute ever waits for a store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from chainfs.kvcache import KVBlockStore

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 << 20


@dataclass
class _Job:
    store: KVBlockStore
    keys: list[bytes]
    blocks: list[np.ndarray]
    nbytes: int
    runs: list[int]  # lengths of its runs of consecutive blocks (the store packs each run)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Submitted:
    """What `submit` did with a request's blocks, and a way to wait until they are in the store."""

    queued: int
    _jobs: tuple[_Job, ...] = ()
    duplicates: int = 0  # blocks not queued as they were queued or stored already  # this request's job and those already holding its duplicates

    def wait(self, timeout: float) -> bool:
        """True once every block of the request is written (or refused); False after `timeout`."""
        deadline = time.monotonic() + timeout
        return all(job.done.wait(max(0.0, deadline - time.monotonic())) for job in self._jobs)


@dataclass
class WriteBehindStats:
    queued_blocks: int = 0
    stored_blocks: int = 0
    duplicate_blocks: int = 0     # dropped: already queued or already in the store
    dropped_blocks: int = 0       # dropped: the queue was full, or left when shutdown's deadline passed
    unwritten_blocks: int = 0     # handed to the store but not written: stored meanwhile, or refused
                                  # (the store counts refusals as errors)
    store_calls: int = 0
    store_ms: float = 0.0         # time the writer spent in store calls
    pending_bytes: int = 0
    max_pending_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("_")}


class WriteBehind:
    """One writer thread behind a bounded queue of block batches."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.stats = WriteBehindStats()
        self._jobs: deque[_Job] = deque()
        self._pending: dict[bytes, _Job] = {}  # keys queued or being written, and their job
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="kv-write-behind", daemon=True)
        self._thread.start()

    def submit(self, store: KVBlockStore, keys: Sequence[bytes], blocks: Sequence[np.ndarray],
               copy: bool = True) -> Submitted:
        """Queues consecutive blocks of a prompt (keys[i] is the key of blocks[i]) and returns at once.
        `copy=False`: the caller hands the arrays over (a copy of its own it will not touch again)."""
        s = self.stats
        with self._cond:
            if self._closed:
                with s._lock:
                    s.dropped_blocks += len(blocks)
                return Submitted(0)
            others = {id(j): j for j in (self._pending.get(k) for k in keys) if j is not None}
            fresh: list[tuple[bytes, np.ndarray]] = []
            runs: list[int] = []
            gap = True
            for k, b in zip(keys, blocks):
                if k in self._pending or store.holds(k):
                    gap = True
                    continue
                if gap:
                    runs.append(0)
                runs[-1] += 1
                gap = False
                fresh.append((k, b))
            duplicates = len(blocks) - len(fresh)
            nbytes = sum(b.nbytes for _, b in fresh)
            full = bool(fresh) and s.pending_bytes + nbytes > self.max_bytes
            jobs = list(others.values())
            if fresh and not full:
                job = _Job(store, [k for k, _ in fresh], [np.array(b, copy=True) if copy else b for _, b in fresh], nbytes, runs)
                self._jobs.append(job)
                self._pending.update(dict.fromkeys(job.keys, job))
                jobs.append(job)
                self._cond.notify()
            with s._lock:
                s.duplicate_blocks += duplicates
                if full:
                    s.dropped_blocks += len(fresh)
                elif fresh:
                    s.queued_blocks += len(fresh)
                    s.pending_bytes += nbytes
                    s.max_pending_bytes = max(s.max_pending_bytes, s.pending_bytes)
            if full:
                log.warning("kv write-behind queue full (%d bytes pending): %d blocks dropped",
                            s.pending_bytes, len(fresh))
                return Submitted(0, tuple(others.values()), duplicates)
            return Submitted(len(fresh), tuple(jobs), duplicates)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                jobs = list(self._jobs)
                self._jobs.clear()
                self._busy = True
            try:
                self._write(jobs)
            finally:
                with self._cond:
                    for job in jobs:
                        for key in job.keys:
                            self._pending.pop(key, None)
                        job.done.set()
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, jobs: list[_Job]) -> None:
        """Everything queued for one store goes out as one batched store call."""
        by_store: dict[int, list[_Job]] = {}
        for job in jobs:
            by_store.setdefault(id(job.store), []).append(job)
        for group in by_store.values():
            keys = [k for j in group for k in j.keys]
            runs = []
            for j in group:
                at = 0
                for n in j.runs:
                    runs.append((j.keys[at:at + n], j.blocks[at:at + n]))
                    at += n
            t = time.perf_counter()
            try:
                written = group[0].store.store_runs(runs)
            except Exception:  # noqa: BLE001 - the store counts its own failures; never kill the writer
                log.exception("kv write-behind: store failed")
                written = 0
            ms = (time.perf_counter() - t) * 1000
            s = self.stats
            with s._lock:
                s.store_calls += 1
                s.store_ms += ms
                s.stored_blocks += written
                s.unwritten_blocks += len(keys) - written
                s.pending_bytes -= sum(j.nbytes for j in group)

    def drain(self, timeout: float) -> bool:
        """Waits until everything queued so far is written; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Stops taking blocks, writes what is queued within `timeout`, drops (and counts) the rest."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        drained = self.drain(timeout)
        if not drained:
            with self._cond:
                left = list(self._jobs)
                self._jobs.clear()
                for job in left:
                    for key in job.keys:
                        self._pending.pop(key, None)
                    job.done.set()  # dropped: nobody may wait for it any longer
            with self.stats._lock:
                self.stats.dropped_blocks += sum(len(j.keys) for j in left)
                self.stats.pending_bytes -= sum(j.nbytes for j in left)
            log.warning("kv write-behind: %d blocks not written by the shutdown deadline",
                        sum(len(j.keys) for j in left))
        self._thread.join(timeout=max(0.0, timeout) if drained else 0.1)
        return drained
