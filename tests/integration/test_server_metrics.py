"""Every server's /metrics, scraped over HTTP and parsed with prometheus_client's parser: values
move when I/O happens (bytes, ops, chunks, RPCs, errors by reason, GC), and chain states show."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.common.scrape import Samples, scrape

pytestmark = pytest.mark.integration

SIZE = 3 << 20  # one 4 MiB chunk's worth, partly filled


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("metrics")
    with LocalCluster(root, storage_nodes=3, replicas=3, targets_per_node=2, fsync=False,
                      gc_interval=0.2, gc_grace=0.5) as c:
        yield c


def meta(cluster: LocalCluster) -> Samples:
    return scrape(f"127.0.0.1:{cluster.state.meta.metrics_port}")


def nodes(cluster: LocalCluster) -> list[Samples]:
    return [scrape(f"127.0.0.1:{s.metrics_port}") for s in cluster.state.storage]


def total(samples: list[Samples], name: str, **labels: str) -> float:
    return sum(s.total(name, **labels) for s in samples)


def test_every_server_serves_metrics_on_its_own_port(cluster: LocalCluster) -> None:
    ports = [cluster.state.meta.metrics_port] + [s.metrics_port for s in cluster.state.storage]
    assert all(ports) and len(set(ports)) == 4
    assert cluster.state.meta.port not in ports
    m = meta(cluster)
    assert m.get_one("chainfs_cluster_nodes", alive="yes") == 3
    assert m.get_one("chainfs_cluster_targets", state="serving") == 6
    assert m.get_one("chainfs_cluster_chains_degraded") == 0
    addresses = {labels["metrics_address"] for labels, _ in m.series("chainfs_cluster_node_alive")}
    assert addresses == {f"127.0.0.1:{s.metrics_port}" for s in cluster.state.storage}, "routing names metrics"
    assert m.total("chainfs_rpc_requests_total", method="Register", code="OK") >= 3

    def serving(s: Samples) -> bool:
        states = s.series("chainfs_target_state")
        return len(states) == 2 and all(labels["state"] == "serving" for labels, _ in states)

    # nodes pull the routing table with their heartbeats, so they may lag the manager for a moment
    wait_for(lambda: all(serving(s) for s in nodes(cluster)), 10, "nodes to hold the formed chains")
    for s in nodes(cluster):
        assert s.get_one("chainfs_storage_fenced") == 0
        assert s.get_one("chainfs_routing_version") == m.get_one("chainfs_cluster_routing_version")
        assert len(s.series("chainfs_target_disk_free_bytes")) == 2


def test_io_moves_bytes_ops_chunks_rpcs_and_errors(cluster: LocalCluster) -> None:
    client = ChainClient(cluster.address)
    before, m0 = nodes(cluster), meta(cluster)
    data = os.urandom(SIZE)
    client.write_file("/m/a.bin", data)
    mid = nodes(cluster)
    # every replica of the chain stored the chunk once
    assert total(mid, "chainfs_storage_bytes_total", op="write") - total(
        before, "chainfs_storage_bytes_total", op="write") == 3 * SIZE
    assert total(mid, "chainfs_storage_ops_total", op="write") - total(
        before, "chainfs_storage_ops_total", op="write") == 3
    assert total(mid, "chainfs_rpc_duration_seconds_count", method="Write") - total(
        before, "chainfs_rpc_duration_seconds_count", method="Write") == 3
    assert client.read_file("/m/a.bin") == data
    after = nodes(cluster)
    assert total(after, "chainfs_storage_bytes_total", op="read") - total(
        before, "chainfs_storage_bytes_total", op="read") == SIZE
    # chunk counts and used bytes are read from the stores (cached up to 2 s)
    wait_for(lambda: total(nodes(cluster), "chainfs_target_used_bytes") == 3 * SIZE, 10, "used bytes")
    assert total(nodes(cluster), "chainfs_target_chunks") == 3

    with pytest.raises(FileNotFoundError):
        client.stat("/m/missing")
    m1 = meta(cluster)
    assert m1.total("chainfs_rpc_errors_total", method="Stat", reason="not_found") == \
        m0.total("chainfs_rpc_errors_total", method="Stat", reason="not_found") + 1
    assert m1.total("chainfs_rpc_duration_seconds_count", method="OpenWrite") > \
        m0.total("chainfs_rpc_duration_seconds_count", method="OpenWrite")


def test_gc_progress_shows(cluster: LocalCluster) -> None:
    client = ChainClient(cluster.address)
    client.write_file("/g/b.bin", os.urandom(1 << 20))
    collected = meta(cluster).get_one("chainfs_gc_collected_total")
    client.rm("/g/b.bin")
    wait_for(lambda: meta(cluster).get_one("chainfs_gc_collected_total") == collected + 1, 30, "gc to collect")
    wait_for(lambda: meta(cluster).get_one("chainfs_gc_pending_records") == 0, 10, "the backlog to empty")
    assert meta(cluster).get_one("chainfs_gc_passes_total") > 0


def test_a_dead_node_shows_in_chain_states(cluster: LocalCluster) -> None:
    (info, _), = nodes(cluster)[2].series("chainfs_storage_node_info")
    cluster.kill_storage(2)
    try:
        wait_for(lambda: meta(cluster).get_one("chainfs_cluster_targets", state="offline") == 2, 30,
                 "the dead node's targets to go offline")
        m = meta(cluster)
        assert m.get_one("chainfs_cluster_nodes", alive="no") == 1
        assert m.total("chainfs_cluster_target_state", node=info["node"], state="offline") == 2
        assert m.get_one("chainfs_cluster_chains_degraded") == 2
        with pytest.raises(OSError):
            scrape(f"127.0.0.1:{cluster.state.storage[2].metrics_port}", timeout=1)
    finally:
        cluster.restart_storage(2)
        cluster.wait_healthy(60)
    wait_for(lambda: meta(cluster).get_one("chainfs_cluster_targets", state="serving") == 6, 30, "serving again")
