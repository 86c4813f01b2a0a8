"""A storage node's Prometheus metrics: hooks the data path calls, and what is read at scrape time.

Hooks (process-wide, cheap: a few counter increments; any data path may call them):

    record_io(target_id, op, nbytes, seconds)   # op "read" or "write", once per chunk read/written
                                                # (a short-circuit open counts as a read of its range)
    record_resync(sent, removed, seconds, ok)   # once per finished resync job of a chain
    record_scrub(target_id, nbytes, bad)        # once per chunk the scrubber verified
    record_scrub_pass(target_id)                # once per finished scrub pass over a target
    record_repair(cause, ok)                    # once per repair of a bad replica chunk
    record_data_drop(reason)                    # once per data connection the node dropped or refused

| metric | kind | labels | source |
| --- | --- | --- | --- |
| `chainfs_storage_bytes_total` | counter | target, op | record_io |
| `chainfs_storage_ops_total` | counter | target, op | record_io |
| `chainfs_storage_op_seconds` | histogram | target, op | record_io |
| `chainfs_resync_chunks_sent_total` / `_removed_total` | counter | | record_resync |
| `chainfs_resync_jobs_total` | counter | result (ok, failed) | record_resync |
| `chainfs_resync_jobs_running` | gauge | | the resyncer, at scrape |
| `chainfs_scrub_bytes_total` / `_chunks_total` | counter | target | record_scrub |
| `chainfs_scrub_bad_chunks_total` | counter | target | record_scrub (a copy that failed verification) |
| `chainfs_scrub_passes_total` | counter | target | record_scrub_pass |
| `chainfs_chunk_repairs_total` | counter | cause (scrub, resync, append, rpc), result (ok, failed) | record_repair |
| `chainfs_data_connections_dropped_total` | counter | reason (stalled: silent inside a frame; refused: past the node's connection cap; per_client: past one client's cap) | record_data_drop |
| `chainfs_target_chunks` | gauge | target | the target's store (a scan, cached 2 s) |
| `chainfs_target_used_bytes` | gauge | target | committed chunk bytes in the store (same scan) |
| `chainfs_target_disk_free_bytes` / `_disk_total_bytes` | gauge | target | the file system holding the target |
| `chainfs_target_state` | gauge (1) | target, chain, state | this node's routing table |
| `chainfs_chain_version` | gauge | chain | this node's routing table (chains it is in) |
| `chainfs_storage_fenced` | gauge | | 1 while the node's lease ran out and it refuses I/O |
| `chainfs_routing_version` | gauge | | the routing table version the node holds |
| `chainfs_storage_node_info` | gauge (1) | node, address | identity of this process |

RPC latency and errors per method come from `common.metrics.RpcMetrics`.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Iterator, Mapping

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chainfs.common import config
from chainfs.common.metrics import PROCESS, Ttl
from chainfs.proto import meta_pb2
from chainfs.storageserver.chunk_ids import ChunkKey

if TYPE_CHECKING:
    from chainfs.storageserver.chunk_store import ChunkStore
    from chainfs.storageserver.resync import Resyncer
    from chainfs.storageserver.routing import ClusterRouting

_IO_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BYTES = Counter("chainfs_storage_bytes", "chunk bytes read or written", ["target", "op"], registry=PROCESS)
_OPS = Counter("chainfs_storage_ops", "chunk reads or writes", ["target", "op"], registry=PROCESS)
_SECONDS = Histogram("chainfs_storage_op_seconds", "time of one chunk read or write on this node",
                     ["target", "op"], buckets=_IO_BUCKETS, registry=PROCESS)
_RESYNC_SENT = Counter("chainfs_resync_chunks_sent", "chunks sent to syncing successors", registry=PROCESS)
_RESYNC_REMOVED = Counter("chainfs_resync_chunks_removed", "chunks removed from syncing successors",
                          registry=PROCESS)
_RESYNC_JOBS = Counter("chainfs_resync_jobs", "finished resync jobs", ["result"], registry=PROCESS)


_SCRUB_BYTES = Counter("chainfs_scrub_bytes", "chunk bytes verified by the scrubber", ["target"], registry=PROCESS)
_SCRUB_CHUNKS = Counter("chainfs_scrub_chunks", "chunks verified by the scrubber", ["target"], registry=PROCESS)
_SCRUB_BAD = Counter("chainfs_scrub_bad_chunks", "chunks whose copy failed verification", ["target"],
                     registry=PROCESS)
_SCRUB_PASSES = Counter("chainfs_scrub_passes", "finished scrub passes over a target", ["target"], registry=PROCESS)
_DATA_DROPS = Counter("chainfs_data_connections_dropped", "data connections dropped (stalled) or refused (cap)",
                      ["reason"], registry=PROCESS)
_REPAIRS = Counter("chainfs_chunk_repairs", "repairs of a bad replica chunk from a good replica",
                   ["cause", "result"], registry=PROCESS)


def record_scrub(target_id: int, nbytes: int, bad: bool) -> None:
    """Counts one chunk the scrubber read and verified."""
    t = str(target_id)
    _SCRUB_BYTES.labels(t).inc(nbytes)
    _SCRUB_CHUNKS.labels(t).inc()
    if bad:
        _SCRUB_BAD.labels(t).inc()


def record_scrub_pass(target_id: int) -> None:
    _SCRUB_PASSES.labels(str(target_id)).inc()


def record_repair(cause: str, ok: bool) -> None:
    """Counts one repair (or failed repair) of a bad replica chunk."""
    _REPAIRS.labels(cause, "ok" if ok else "failed").inc()


def record_data_drop(reason: str) -> None:
    _DATA_DROPS.labels(reason).inc()


def record_io(target_id: int, op: str, nbytes: int, seconds: float) -> None:
    """Counts one chunk read or write of `nbytes` on a target, taking `seconds`."""
    t = str(target_id)
    _BYTES.labels(t, op).inc(nbytes)
    _OPS.labels(t, op).inc()
    _SECONDS.labels(t, op).observe(seconds)


def record_resync(sent: int, removed: int, seconds: float, ok: bool = True) -> None:
    """Counts one finished (or failed) resync job of a chain."""
    _RESYNC_SENT.inc(sent)
    _RESYNC_REMOVED.inc(removed)
    _RESYNC_JOBS.labels("ok" if ok else "failed").inc()


def _usage(store: "ChunkStore") -> tuple[int, int]:
    """(committed chunks, their bytes) of one store, by paging through its chunk list."""
    chunks = used = 0
    after = None
    while True:
        page, more = store.list_chunks(0, after, config.MAX_LIST_LIMIT)
        chunks += len(page)
        used += sum(m.length for m in page)
        if not more or not page:
            return chunks, used
        last = page[-1].chunk
        after = ChunkKey(last.inode, last.index)


class NodeCollector(Collector):
    """What a storage node reports about its targets, chains and lease at scrape time."""

    def __init__(self, stores: Mapping[int, "ChunkStore"], routing: "ClusterRouting",
                 resyncer: "Resyncer | None" = None, scan_ttl: float = 2.0) -> None:
        self.stores = stores
        self.routing = routing
        self.resyncer = resyncer
        self._scan = Ttl(lambda: {tid: _usage(s) for tid, s in list(self.stores.items())}, scan_ttl)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        usage = self._scan.get()
        chunks = GaugeMetricFamily("chainfs_target_chunks", "committed chunks on a target", labels=["target"])
        used = GaugeMetricFamily("chainfs_target_used_bytes", "committed chunk bytes on a target", labels=["target"])
        free = GaugeMetricFamily("chainfs_target_disk_free_bytes", "free bytes of the target's file system",
                                 labels=["target"])
        total = GaugeMetricFamily("chainfs_target_disk_total_bytes", "size of the target's file system",
                                  labels=["target"])
        for tid, store in sorted(self.stores.items()):
            n, b = usage.get(tid, (0, 0))
            chunks.add_metric([str(tid)], n)
            used.add_metric([str(tid)], b)
            try:
                disk = shutil.disk_usage(store.root)
            except OSError:
                continue
            free.add_metric([str(tid)], disk.free)
            total.add_metric([str(tid)], disk.total)
        yield from (chunks, used, free, total)
        table = self.routing.routing
        local = set(self.stores)
        state = GaugeMetricFamily("chainfs_target_state", "public state of a local target (1)",
                                  labels=["target", "chain", "state"])
        version = GaugeMetricFamily("chainfs_chain_version", "chain version, chains with a local target",
                                    labels=["chain"])
        for chain in table.chains:
            mine = [t for t in chain.targets if t.target_id in local]
            for t in mine:
                state.add_metric([str(t.target_id), str(chain.chain_id),
                                  meta_pb2.TargetState.Name(t.state).lower()], 1)
            if mine:
                version.add_metric([str(chain.chain_id)], chain.version)
        yield from (state, version)
        yield GaugeMetricFamily("chainfs_storage_fenced", "1 while the node's lease ran out (no I/O served)",
                                value=1 if self.routing.fenced else 0)
        yield GaugeMetricFamily("chainfs_routing_version", "routing table version held", value=table.version)
        running = self.resyncer.jobs_running if self.resyncer is not None else 0
        yield GaugeMetricFamily("chainfs_resync_jobs_running", "resync jobs of chains in progress", value=running)
        info = GaugeMetricFamily("chainfs_storage_node_info", "this storage node", labels=["node", "address"])
        info.add_metric([str(self.routing.node_id), self.routing.address], 1)
        yield info
