"""A storage node's scrape-time metrics and what `cluster status` makes of them, without processes:
a fenced node, a syncing target, chunk counts and used bytes read from a real ChunkStore."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from chainfs.cli import cluster_view
from chainfs.common.checksum import crc32c
from chainfs.common.scrape import parse
from chainfs.proto import meta_pb2 as mpb
from chainfs.storageserver.chunk_store import ChunkKey, ChunkStore
from chainfs.storageserver.metrics import NodeCollector, record_io


def table() -> mpb.RoutingTable:
    t = mpb.RoutingTable(version=7)
    t.nodes.add(node_id=1, address="127.0.0.1:1", alive=True, metrics_address="127.0.0.1:2")
    t.nodes.add(node_id=2, address="127.0.0.1:3", alive=False)
    t.chains.add(chain_id=1, version=3, targets=[mpb.TargetInfo(target_id=10, node_id=1, state=mpb.SERVING),
                                                  mpb.TargetInfo(target_id=20, node_id=2, state=mpb.OFFLINE)])
    t.chains.add(chain_id=2, version=5, targets=[mpb.TargetInfo(target_id=11, node_id=1, state=mpb.SYNCING)])
    return t


def test_collector_reads_stores_routing_and_fencing(tmp_path: Path) -> None:
    stores = {10: ChunkStore(tmp_path / "t10", fsync=False), 11: ChunkStore(tmp_path / "t11", fsync=False)}
    try:
        for index, size in ((0, 1000), (1, 24)):
            data = bytes(size)
            stores[10].stage(ChunkKey(5, index), 1, data)
            stores[10].commit(ChunkKey(5, index), 1, size, crc32c(data), chain_version=3)
        routing = SimpleNamespace(routing=table(), fenced=True, node_id=1, address="127.0.0.1:1")
        resyncer = SimpleNamespace(jobs_running=2)
        registry = CollectorRegistry()
        registry.register(NodeCollector(stores, routing, resyncer, scan_ttl=0))
        record_io(10, "write", 4096, 0.002)
        s = parse(generate_latest(registry).decode())
        assert s.get_one("chainfs_storage_fenced") == 1 and s.get_one("chainfs_resync_jobs_running") == 2
        assert s.get_one("chainfs_target_chunks", target="10") == 2
        assert s.get_one("chainfs_target_used_bytes", target="10") == 1024
        assert s.get_one("chainfs_target_chunks", target="11") == 0
        assert s.get_one("chainfs_target_state", target="11", chain="2", state="syncing") == 1
        assert s.get_one("chainfs_chain_version", chain="1") == 3 and s.get_one("chainfs_routing_version") == 7
        assert s.get_one("chainfs_target_disk_free_bytes", target="10") > 0

        # what `cluster status` concludes from it: degraded, for three reasons
        f = cluster_view.facts(table(), {1: s, 2: None})
        assert not f["healthy"]
        assert any("node 1 is fenced" in p for p in f["problems"])
        assert any("target 11" in p and "syncing" in p for p in f["problems"])
        assert any("node 2" in p and "not alive" in p for p in f["problems"])
        node1 = f["nodes"][0]
        assert node1["chunks"] == 2 and node1["used_bytes"] == 1024 and node1["resync_jobs"] == 2
        assert node1["read_bps"] is None, "no throughput without a scrape before"
    finally:
        for store in stores.values():
            store.close()


def test_throughput_is_the_counter_delta_over_the_interval() -> None:
    before = parse('chainfs_storage_bytes_total{op="write",target="10"} 1000\n')
    now = parse('chainfs_storage_bytes_total{op="write",target="10"} 5000\n'
                'chainfs_target_chunks{target="10"} 1\n')
    f = cluster_view.facts(table(), {1: now}, {1: before}, interval=2.0)
    target = next(t for t in f["nodes"][0]["targets"] if t["target_id"] == 10)
    assert target["write_bps"] == 2000 and target["read_bps"] == 0
