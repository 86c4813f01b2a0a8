"""Resync between real StorageServicers on loopback: the predecessor makes a returning target equal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.common.checksum import crc32c
from chainfs.common.rpc import ChannelPool, bind, make_server
from chainfs.proto import meta_pb2, storage_pb2, storage_pb2_grpc
from chainfs.storageserver.chunk_store import ChunkKey, ChunkStore
from chainfs.storageserver.handlers import StorageServicer, add_to_server
from chainfs.storageserver.replication import Replicator
from chainfs.storageserver.resync import Resyncer

from tests.unit.test_storage_replication import CHAIN, MSG, FakeCluster, FakeRouting, Node, read, write


class Routing(FakeRouting):
    @property
    def routing(self) -> meta_pb2.RoutingTable:
        return self.cluster.table()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[FakeCluster, dict[int, Node], dict[int, Resyncer]]]:
    cluster = FakeCluster()
    client_pool = ChannelPool()
    nodes: dict[int, Node] = {}
    resyncers: dict[int, Resyncer] = {}
    try:
        for t in cluster.targets:
            store = ChunkStore(tmp_path / f"target-{t}", fsync=False)
            routing = Routing(cluster, t)
            pool = ChannelPool()
            replicator = Replicator(routing, {t: store}, pool, rpc_timeout=5.0, message_bytes=MSG)
            resyncers[t] = Resyncer(routing, replicator, {t: store}, pool, poll=0.02)  # type: ignore[arg-type]
            server = make_server(max_workers=16)
            add_to_server(StorageServicer(replicator, resyncers[t]), server)
            address = f"127.0.0.1:{bind(server, '127.0.0.1', 0)}"
            server.start()
            cluster.addresses[t] = address
            stub = storage_pb2_grpc.StorageStub(client_pool.get(address))
            nodes[t] = Node(t, store, routing, server, address, pool, stub, replicator)
        yield cluster, nodes, resyncers
    finally:
        for t, node in nodes.items():
            resyncers[t].stop()
            node.server.stop(0)
            node.pool.close()
            node.store.close()
        client_pool.close()


def chunks(node: Node) -> list[tuple[int, int, int, int, int]]:
    metas, _ = node.store.list_chunks()
    return [(m.chunk.inode, m.chunk.index, m.version, m.length, m.crc) for m in metas]


def test_resync_sends_differing_chunks_and_deletes_extra_ones(chain) -> None:  # type: ignore[no-untyped-def]
    cluster, nodes, resyncers = chain
    write(nodes[1], b"a1", inode=1, index=0)
    write(nodes[1], b"b1", inode=1, index=1)
    # Target 3 goes offline and misses an overwrite, a new chunk and a removal; it also holds a
    # chunk nobody else has (e.g. from an update that was aborted after it committed).
    cluster.states[3] = meta_pb2.OFFLINE
    cluster.version += 1
    v = cluster.version
    write(nodes[1], b"a2-longer", inode=1, index=0, chain_version=v)
    write(nodes[1], b"c1", inode=2, index=0, chain_version=v)
    nodes[1].stub.RemoveChunks(storage_pb2.RemoveChunksRequest(chain_id=CHAIN, chain_version=v, inode=1,
                                                               from_index=1), timeout=10)
    key = ChunkKey(9, 0)
    nodes[3].store.stage(key, 1, b"stray")
    nodes[3].store.commit(key, 1, 5, crc32c(b"stray"), v)
    assert chunks(nodes[3]) != chunks(nodes[2])
    assert resyncers[3].local_state(3) == meta_pb2.ONLINE

    # It returns as SYNCING at the tail: its predecessor (target 2) syncs it.
    cluster.states[3] = meta_pb2.SYNCING
    cluster.version += 1
    v = cluster.version
    [(header, _)] = read(nodes[3], [(2, 0, 0, 10)], chain_version=v)
    assert header.status == storage_pb2.NOT_SERVING  # no reads while syncing
    sent, removed = resyncers[2].sync_chain(nodes[2].routing.position(CHAIN))
    assert (sent, removed) == (2, 2)  # a2 and c1 sent; b1 and the stray chunk removed
    assert chunks(nodes[3]) == chunks(nodes[2]) == chunks(nodes[1])
    assert resyncers[3].local_state(3) == meta_pb2.UPTODATE  # sync-done arrived
    # A sync with nothing to do sends nothing; the background loop runs it on its own too.
    assert resyncers[2].sync_chain(nodes[2].routing.position(CHAIN)) == (0, 0)
    # Writes during and after the sync reach the syncing tail through the chain.
    write(nodes[1], b"a3", inode=1, index=0, chain_version=v)
    assert chunks(nodes[3]) == chunks(nodes[1])
    cluster.states[3] = meta_pb2.SERVING
    cluster.version += 1
    [(header, data)] = read(nodes[3], [(1, 0, 0, 10)], chain_version=cluster.version)
    assert header.status == storage_pb2.OK and data == b"a3"
    assert resyncers[3].local_state(3) == meta_pb2.UPTODATE


def test_background_loop_syncs_a_syncing_successor(chain) -> None:  # type: ignore[no-untyped-def]
    cluster, nodes, resyncers = chain
    write(nodes[1], b"x", inode=5, index=0)
    nodes[3].store.remove(ChunkKey(5, 0))
    cluster.states[3] = meta_pb2.SYNCING
    cluster.version += 1
    for r in resyncers.values():
        r.start()
    deadline = time.monotonic() + 20
    while resyncers[3].local_state(3) != meta_pb2.UPTODATE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert resyncers[3].local_state(3) == meta_pb2.UPTODATE
    assert chunks(nodes[3]) == chunks(nodes[2])
