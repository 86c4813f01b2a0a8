"""Garbage collection: chunks of removed/replaced files and of expired write sessions go away.

Why here, in the metaserver: the GC records are written in the same batch as the namespace change
that orphaned the chunks, so a crash can never lose one; the collector only has to work through
them. For each record it sends RemoveChunks (inode, from index 0) to the head of every chain of the
file's stripe; the head removes and forwards along the chain, so every active replica drops the
chunks, and a replica that was offline loses them during its resync (chunks its predecessor does not
have are deleted). A record is deleted only once every chain has acknowledged, so the collector is
"eventually" by construction: a failed chain is retried on a later pass.

The rate is bounded: at most `batch` records per pass and `rate` RemoveChunks calls per second.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import grpc

from chainfs.common import capabilities
from chainfs.common.background import LoopThread
from chainfs.common.errors import reason_of
from chainfs.common.rpc import ChannelPool
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.metrics import record_gc
from chainfs.metaserver.records import GcRecord
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2, storage_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_GC_INTERVAL = 2.0
DEFAULT_GC_RATE = 50.0  # RemoveChunks calls per second
DEFAULT_GC_BATCH = 100  # records per pass
# A replaced or removed file's chunks outlive it by this long, so a reader that stat'ed the old inode
# just before the change still reads real bytes, not holes.
DEFAULT_GC_GRACE = 30.0
RPC_TIMEOUT = 10.0


class GarbageCollector:
    """A thread that sweeps expired sessions and works through GC records at a bounded rate."""

    def __init__(self, namespace: Namespace, cluster: ClusterManager, *,
                 interval: float = DEFAULT_GC_INTERVAL, session_interval: float = 10.0,
                 rate: float = DEFAULT_GC_RATE, batch: int = DEFAULT_GC_BATCH,
                 channels: ChannelPool | None = None, grace: float = DEFAULT_GC_GRACE,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.namespace = namespace
        self.cluster = cluster
        self.interval = max(0.02, interval)
        self.session_interval = max(0.02, session_interval)
        self.min_gap = 1.0 / rate if rate > 0 else 0.0
        self.batch = max(1, batch)
        self.channels = channels or ChannelPool()
        self.clock = clock
        self.grace_ns = int(max(0.0, grace) * 1e9)
        self.wall_ns = wall_ns
        self._background = LoopThread("gc", self._loop, join_timeout=10)
        self._stop = self._background.stopping
        self._last_call = 0.0
        self._last_sweep = 0.0

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        self._background.stop()
        self.channels.close()

    def _loop(self) -> None:
        tick = min(self.interval, self.session_interval)
        next_gc = self.clock() + self.interval
        while not self._stop.wait(tick):
            if not self.cluster.active:  # a standby metaserver: the elected one collects
                continue
            now = self.clock()
            if now - self._last_sweep >= self.session_interval:
                self._last_sweep = now
                try:
                    self.namespace.sweep_expired_sessions()
                    self.namespace.sweep_request_ids()
                except Exception:  # noqa: BLE001 - keep sweeping; the next pass may succeed
                    log.exception("sweeping expired write sessions failed")
            if now >= next_gc:
                next_gc = now + self.interval
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001
                    log.exception("garbage collection pass failed")

    def run_once(self) -> int:
        """One pass over up to `batch` records; returns how many were finished and deleted."""
        done: list[GcRecord] = []
        failed = 0
        ripe_before = self.wall_ns() - self.grace_ns
        for record in self.namespace.gc_records(limit=self.batch):
            if self._stop.is_set():
                break
            if record.created_ns > ripe_before:
                continue
            if self._collect(record):
                done.append(record)
            else:
                failed += 1
        if done:
            self.namespace.remove_gc_records(done)
            log.info("garbage collected the chunks of %d inodes", len(done))
        record_gc(len(done), failed)
        return len(done)

    def _collect(self, record: GcRecord) -> bool:
        ok = True
        for chain_id in dict.fromkeys(record.chains):
            if not self._remove_on_chain(chain_id, record.inode_id):
                ok = False
        return ok

    def _pace(self) -> None:
        wait = self._last_call + self.min_gap - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        self._last_call = time.monotonic()

    def _remove_on_chain(self, chain_id: int, inode_id: int) -> bool:
        try:
            chain = self.cluster.chain_info(chain_id)
        except KeyError:
            log.warning("gc: chain %d of inode %d is unknown; dropping it", chain_id, inode_id)
            return True
        head = next((t for t in chain.targets if t.state == mpb.SERVING), None)
        if head is None:
            log.debug("gc: chain %d has no serving head; inode %d waits", chain_id, inode_id)
            return False
        address = self.cluster.node_info(head.node_id).address
        self._pace()
        request = storage_pb2.RemoveChunksRequest(chain_id=chain_id, chain_version=chain.version, inode=inode_id,
                                                  from_index=0, request_id=f"gc:{inode_id}:{chain_id}",
                                                  capability=capabilities.grant(inode_id, capabilities.REMOVE))
        try:
            stub = storage_pb2_grpc.StorageStub(self.channels.get(address))
            stub.RemoveChunks(request, timeout=RPC_TIMEOUT)
            return True
        except grpc.RpcError as err:
            log.info("gc: removing inode %d on chain %d failed (%s); retrying later",
                     inode_id, chain_id, reason_of(err).value)
            return False
