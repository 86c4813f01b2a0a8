"""The metaserver's Prometheus metrics: the cluster tables at scrape time, and GC progress.

Hook (process-wide): `record_gc(collected, failed)` once per garbage collection pass.

| metric | kind | labels | source |
| --- | --- | --- | --- |
| `chainfs_cluster_nodes` | gauge | alive (yes, no) | cluster manager |
| `chainfs_cluster_node_alive` | gauge | node, address, metrics_address | cluster manager |
| `chainfs_cluster_targets` | gauge | state (serving, syncing, waiting, lastsrv, offline) | cluster manager |
| `chainfs_cluster_target_state` | gauge (1) | chain, target, node, state | cluster manager |
| `chainfs_cluster_chain_version` | gauge | chain | cluster manager |
| `chainfs_cluster_chains_degraded` | gauge | | chains with a target not serving |
| `chainfs_cluster_routing_version` | gauge | | cluster manager |
| `chainfs_gc_pending_records` | gauge | | GC records waiting (removed files, abandoned sessions; read every 2 s) |
| `chainfs_gc_collected_total` | counter | | inodes whose chunks were removed |
| `chainfs_gc_failed_total` | counter | | inodes a pass could not finish (retried later) |
| `chainfs_gc_passes_total` | counter | | GC passes run |

RPC latency and errors per method come from `common.metrics.RpcMetrics`.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chainfs.common.metrics import PROCESS, Ttl
from chainfs.proto import meta_pb2 as pb

if TYPE_CHECKING:
    from chainfs.metaserver.cluster_manager import ClusterManager
    from chainfs.metaserver.namespace import Namespace

_GC_COLLECTED = Counter("chainfs_gc_collected", "inodes whose chunks GC removed", registry=PROCESS)
_GC_FAILED = Counter("chainfs_gc_failed", "inodes a GC pass could not finish", registry=PROCESS)
_GC_PASSES = Counter("chainfs_gc_passes", "GC passes run", registry=PROCESS)
_GC_PENDING_LIMIT = 100_000


def record_gc(collected: int, failed: int) -> None:
    """Counts one garbage collection pass."""
    _GC_PASSES.inc()
    _GC_COLLECTED.inc(collected)
    _GC_FAILED.inc(failed)


def state_name(state: int) -> str:
    return pb.TargetState.Name(state).lower()


class ClusterCollector(Collector):
    """Nodes, targets and chains as the cluster manager holds them, and the GC backlog."""

    def __init__(self, cluster: "ClusterManager", namespace: "Namespace | None" = None) -> None:
        self.cluster = cluster
        self._pending = Ttl(lambda: len(namespace.gc_records(limit=_GC_PENDING_LIMIT)) if namespace else 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        table = self.cluster.routing_table()
        alive = GaugeMetricFamily("chainfs_cluster_node_alive", "1 while the node heartbeats",
                                  labels=["node", "address", "metrics_address"])
        for n in table.nodes:
            alive.add_metric([str(n.node_id), n.address, n.metrics_address], 1 if n.alive else 0)
        nodes = GaugeMetricFamily("chainfs_cluster_nodes", "storage nodes", labels=["alive"])
        up = sum(1 for n in table.nodes if n.alive)
        nodes.add_metric(["yes"], up)
        nodes.add_metric(["no"], len(table.nodes) - up)
        states = GaugeMetricFamily("chainfs_cluster_target_state", "state of each chain member (1)",
                                   labels=["chain", "target", "node", "state"])
        versions = GaugeMetricFamily("chainfs_cluster_chain_version", "chain version", labels=["chain"])
        counts: Tally[str] = Tally({state_name(s): 0 for s in pb.TargetState.values() if s})
        degraded = 0
        for c in table.chains:
            versions.add_metric([str(c.chain_id)], c.version)
            for t in c.targets:
                states.add_metric([str(c.chain_id), str(t.target_id), str(t.node_id), state_name(t.state)], 1)
                counts[state_name(t.state)] += 1
            degraded += any(t.state != pb.SERVING for t in c.targets)
        targets = GaugeMetricFamily("chainfs_cluster_targets", "chain members by state", labels=["state"])
        for name, n in sorted(counts.items()):
            targets.add_metric([name], n)
        yield from (alive, nodes, states, versions, targets)
        yield GaugeMetricFamily("chainfs_cluster_chains_degraded", "chains with a member not serving",
                                value=degraded)
        yield GaugeMetricFamily("chainfs_cluster_routing_version", "routing table version", value=table.version)
        yield GaugeMetricFamily("chainfs_gc_pending_records", "GC records waiting", value=self._pending.get())
