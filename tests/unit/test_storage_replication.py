"""CRAQ replication across three real StorageServicers on loopback gRPC, with a fake routing view."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from chainfs.common.checksum import crc32c
from chainfs.common.errors import Reason, is_retryable, reason_of
from chainfs.common.rpc import ChannelPool, bind, make_server
from chainfs.proto import meta_pb2, storage_pb2, storage_pb2_grpc
from chainfs.storageserver.chunk_store import ChunkKey, ChunkStore
from chainfs.storageserver.handlers import StorageServicer, add_to_server
from chainfs.storageserver.replication import Replicator
from chainfs.storageserver.routing import ChainPosition, compute_position

CHAIN = 7
CHAIN_VERSION = 3
CHUNK_SIZE = 1 << 20
MSG = 64 * 1024  # small stream messages, so that chunks span several of them


@dataclass
class FakeCluster:
    """One chain of targets 1, 2, 3 (head first), one target per node."""

    targets: list[int] = field(default_factory=lambda: [1, 2, 3])
    states: dict[int, int] = field(default_factory=lambda: {1: meta_pb2.SERVING, 2: meta_pb2.SERVING,
                                                           3: meta_pb2.SERVING})
    addresses: dict[int, str] = field(default_factory=dict)
    version: int = CHAIN_VERSION

    def table(self) -> meta_pb2.RoutingTable:
        return meta_pb2.RoutingTable(
            version=10,
            nodes=[meta_pb2.NodeInfo(node_id=t, address=a) for t, a in self.addresses.items()],
            chains=[meta_pb2.ChainInfo(chain_id=CHAIN, version=self.version, targets=[
                meta_pb2.TargetInfo(target_id=t, node_id=t, chain_id=CHAIN, state=self.states[t])
                for t in self.targets
            ])],
        )


class FakeRouting:
    """The routing view of the node that holds `target_id`."""

    def __init__(self, cluster: FakeCluster, target_id: int) -> None:
        self.cluster = cluster
        self.target_id = target_id
        self.refreshes = 0

    def position(self, chain_id: int) -> ChainPosition | None:
        return compute_position(self.cluster.table(), chain_id, {self.target_id})

    def refresh(self) -> None:
        self.refreshes += 1


@dataclass
class Node:
    target: int
    store: ChunkStore
    routing: FakeRouting
    server: grpc.Server
    address: str
    pool: ChannelPool
    stub: storage_pb2_grpc.StorageStub
    replicator: Replicator


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[int, Node]]:
    cluster = FakeCluster()
    client_pool = ChannelPool()
    out: dict[int, Node] = {}
    try:
        for t in cluster.targets:
            store = ChunkStore(tmp_path / f"target-{t}", fsync=False)
            routing = FakeRouting(cluster, t)
            pool = ChannelPool()
            replicator = Replicator(routing, {t: store}, pool, rpc_timeout=5.0, message_bytes=MSG)
            server = make_server(max_workers=16)
            add_to_server(StorageServicer(replicator), server)
            port = bind(server, "127.0.0.1", 0)
            server.start()
            address = f"127.0.0.1:{port}"
            cluster.addresses[t] = address
            stub = storage_pb2_grpc.StorageStub(client_pool.get(address))
            out[t] = Node(t, store, routing, server, address, pool, stub, replicator)
        yield out
    finally:
        for node in out.values():
            node.server.stop(0)
            node.pool.close()
            node.store.close()
        client_pool.close()


def write(node: Node, data: bytes, *, inode: int = 1, index: int = 0, offset: int = 0, replace: bool = True,
          chain_version: int = CHAIN_VERSION, request_id: str = "", crc: int | None = None,
          from_target: int = 0, version: int = 0) -> storage_pb2.WriteReply:
    header = storage_pb2.WriteHeader(
        chain_id=CHAIN, chain_version=chain_version, chunk=storage_pb2.ChunkId(inode=inode, index=index),
        offset=offset, length=len(data), replace=replace, data_crc=crc32c(data) if crc is None else crc,
        chunk_size=CHUNK_SIZE, request_id=request_id, version=version, from_target=from_target,
    )

    def stream() -> Iterator[storage_pb2.WriteRequest]:
        yield storage_pb2.WriteRequest(header=header)
        for at in range(0, len(data), MSG):
            yield storage_pb2.WriteRequest(data=data[at:at + MSG])

    return node.stub.Write(stream(), timeout=10)


def read(node: Node, items: list[tuple[int, int, int, int]], chain_version: int = CHAIN_VERSION
         ) -> list[tuple[storage_pb2.ReadItemHeader, bytes]]:
    """items: (inode, index, offset, length). Returns (header, data) per item, data checked."""
    request = storage_pb2.ReadRequest(items=[
        storage_pb2.ReadItem(chain_id=CHAIN, chain_version=chain_version,
                             chunk=storage_pb2.ChunkId(inode=i, index=j), offset=o, length=n)
        for i, j, o, n in items
    ])
    out: list[tuple[storage_pb2.ReadItemHeader, bytearray]] = []
    for reply in node.stub.Read(request, timeout=10):
        if reply.WhichOneof("body") == "header":
            out.append((reply.header, bytearray()))
        else:
            out[-1][1].extend(reply.data)
    for header, data in out:
        assert len(data) == header.length
        assert crc32c(data) == header.data_crc
    return [(h, bytes(d)) for h, d in out]


def read_one(node: Node, inode: int = 1, index: int = 0, offset: int = 0,
             length: int = CHUNK_SIZE) -> tuple[storage_pb2.ReadItemHeader, bytes]:
    [(header, data)] = read(node, [(inode, index, offset, length)])
    return header, data


def metas(nodes: dict[int, Node], key: ChunkKey = ChunkKey(1, 0)) -> list[tuple[int, int, int, int]]:
    out = []
    for node in nodes.values():
        m = node.store.get_meta(key)
        out.append(None if m is None else (m.version, m.pending_version, m.length, m.crc))
    return out


def rpc_reason(exc_info: pytest.ExceptionInfo) -> Reason:
    return reason_of(exc_info.value)


def test_write_at_head_commits_on_all_replicas(nodes: dict[int, Node]) -> None:
    data = bytes(range(256)) * 1200  # 300 KiB: several stream messages
    reply = write(nodes[1], data, request_id="c:1")
    assert not reply.duplicate
    assert (reply.meta.version, reply.meta.length, reply.meta.crc) == (1, len(data), crc32c(data))
    assert metas(nodes) == [(1, 0, len(data), crc32c(data))] * 3
    for node in nodes.values():
        header, got = read_one(node)
        assert header.status == storage_pb2.OK and got == data
        assert header.meta.version == 1
        # A ranged read that crosses a message boundary and is clipped at the chunk's end.
        header, got = read_one(node, offset=len(data) - MSG - 5, length=CHUNK_SIZE)
        assert header.status == storage_pb2.OK and got == data[-MSG - 5:]


def test_partial_update_is_copy_on_write_and_replicates(nodes: dict[int, Node]) -> None:
    base = b"a" * 100_000
    write(nodes[1], base)
    patch = b"Z" * 10_000
    reply = write(nodes[1], patch, offset=150_000, replace=False, request_id="c:2")
    expected = base + b"\0" * 50_000 + patch
    assert (reply.meta.version, reply.meta.length) == (2, len(expected))
    assert metas(nodes) == [(2, 0, len(expected), crc32c(expected))] * 3
    reply = write(nodes[1], b"MID", offset=10, replace=False)  # inside the chunk: length unchanged
    expected = expected[:10] + b"MID" + expected[13:]
    assert (reply.meta.version, reply.meta.length) == (3, len(expected))
    for node in nodes.values():
        assert read_one(node)[1] == expected
        files = list(node.store.chunk_path(ChunkKey(1, 0), 3).parent.iterdir())
        assert [f.name for f in files] == ["0000000000000001-00000000.v3"]  # old versions unlinked
    reply = write(nodes[1], b"short")  # replace: the chunk becomes exactly the data
    assert reply.meta.length == 5
    assert all(read_one(node)[1] == b"short" for node in nodes.values())


def test_request_id_dedupe(nodes: dict[int, Node]) -> None:
    first = write(nodes[1], b"first", request_id="client-9:17")
    again = write(nodes[1], b"something else", request_id="client-9:17")
    assert again.duplicate and not first.duplicate
    assert again.meta.version == 1 and again.meta.crc == crc32c(b"first")
    assert metas(nodes) == [(1, 0, 5, crc32c(b"first"))] * 3
    assert all(read_one(node)[1] == b"first" for node in nodes.values())
    write(nodes[1], b"second", request_id="client-9:18")
    assert metas(nodes) == [(2, 0, 6, crc32c(b"second"))] * 3


def test_write_at_non_head_is_stale_routing(nodes: dict[int, Node]) -> None:
    for t in (2, 3):
        with pytest.raises(grpc.RpcError) as exc:
            write(nodes[t], b"data")
        assert rpc_reason(exc) == Reason.STALE_ROUTING and is_retryable(rpc_reason(exc))
    # A forwarded write that does not come from the predecessor is refused as well.
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[3], b"data", from_target=1, version=1)
    assert rpc_reason(exc) == Reason.STALE_ROUTING
    assert metas(nodes) == [None] * 3


def test_wrong_chain_version_is_stale_routing(nodes: dict[int, Node]) -> None:
    for version in (CHAIN_VERSION - 1, CHAIN_VERSION + 1):
        with pytest.raises(grpc.RpcError) as exc:
            write(nodes[1], b"data", chain_version=version)
        assert rpc_reason(exc) == Reason.STALE_ROUTING
    assert nodes[1].routing.refreshes == 1  # only a newer version than ours is worth a refresh
    assert metas(nodes) == [None] * 3
    [(header, _)] = read(nodes[2], [(1, 0, 0, 10)], chain_version=CHAIN_VERSION + 1)
    assert header.status == storage_pb2.STALE_ROUTING


def test_chain_version_change_at_successor_fails_the_write(nodes: dict[int, Node]) -> None:
    write(nodes[1], b"v1")
    nodes[1].routing.cluster.version += 1  # every node sees it; the client still has the old one
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[1], b"v2")
    assert rpc_reason(exc) == Reason.STALE_ROUTING
    write(nodes[1], b"v2", chain_version=CHAIN_VERSION + 1)
    assert metas(nodes) == [(2, 0, 2, crc32c(b"v2"))] * 3


def test_bad_crc_is_refused_and_nothing_stored(nodes: dict[int, Node]) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[1], b"payload", crc=crc32c(b"payload") ^ 1)
    assert rpc_reason(exc) == Reason.CHECKSUM_MISMATCH
    assert metas(nodes) == [None] * 3
    for node in nodes.values():
        assert node.store.list_chunks()[0] == []


def test_invalid_writes(nodes: dict[int, Node]) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[1], b"x" * 10, offset=CHUNK_SIZE - 5, replace=False)
    assert rpc_reason(exc) == Reason.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[1], b"x", offset=3, replace=True)
    assert rpc_reason(exc) == Reason.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[1], b"x", inode=0)
    assert rpc_reason(exc) == Reason.INVALID_ARGUMENT
    assert metas(nodes) == [None] * 3


def test_first_update_in_flight_reads_as_pending_not_missing(nodes: dict[int, Node]) -> None:
    """A chunk whose first version is pending at the head must not read as a hole (zeros) there."""
    key = ChunkKey(1, 0)
    nodes[1].store.stage(key, 1, b"first")
    header, data = read_one(nodes[1])
    assert header.status == storage_pb2.PENDING and data == b""
    assert read_one(nodes[3])[0].status == storage_pb2.CHUNK_NOT_FOUND  # nothing reached the tail


def test_pending_on_non_tail_reads_as_pending(nodes: dict[int, Node]) -> None:
    write(nodes[1], b"committed")
    key = ChunkKey(1, 0)
    for node in nodes.values():
        node.store.stage(key, 2, b"uncommitted")
    for t in (1, 2):
        header, data = read_one(nodes[t])
        assert header.status == storage_pb2.PENDING and data == b""
    header, data = read_one(nodes[3])  # the tail answers with its committed data
    assert header.status == storage_pb2.OK and data == b"committed"
    for node in nodes.values():
        node.store.abort_pending(key)
    assert all(read_one(node)[1] == b"committed" for node in nodes.values())


def test_read_statuses(nodes: dict[int, Node]) -> None:
    write(nodes[1], b"0123456789", inode=5, index=2)
    results = read(nodes[2], [
        (5, 2, 3, 4),            # OK, a range
        (5, 3, 0, 10),           # no such chunk
        (0, 0, 0, 10),           # invalid id
        (5, 2, 1 << 30, 10),     # beyond any chunk
        (5, 2, 8, 100),          # clipped
    ])
    assert [h.item for h, _ in results] == [0, 1, 2, 3, 4]
    assert [h.status for h, _ in results] == [storage_pb2.OK, storage_pb2.CHUNK_NOT_FOUND, storage_pb2.INVALID,
                                              storage_pb2.INVALID, storage_pb2.OK]
    assert results[0][1] == b"3456" and results[4][1] == b"89"
    nodes[3].routing.cluster.states[3] = meta_pb2.SYNCING
    [(header, _)] = read(nodes[3], [(5, 2, 0, 10)])
    assert header.status == storage_pb2.NOT_SERVING


def test_corrupt_replica_reports_checksum_mismatch(nodes: dict[int, Node]) -> None:
    data = b"precious" * 1000
    write(nodes[1], data)
    path = nodes[2].store.chunk_path(ChunkKey(1, 0), 1)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(raw)
    header, _ = read_one(nodes[2])
    assert header.status == storage_pb2.CHECKSUM_MISMATCH
    assert read_one(nodes[3])[1] == data


def test_successor_down_fails_retryably_and_stays_pending(nodes: dict[int, Node]) -> None:
    """A forward that got no acknowledgement may still have been committed downstream: the update
    stays pending (reads there answer PENDING, never the old or the new bytes) until a retry."""
    write(nodes[1], b"before")
    nodes[3].server.stop(0)
    with pytest.raises(grpc.RpcError) as exc:
        write(nodes[1], b"after", request_id="c:5")
    reason = rpc_reason(exc)
    assert reason in (Reason.UNAVAILABLE, Reason.STALE_ROUTING) and is_retryable(reason)
    committed = [(m[0], m[2], m[3]) for m in metas(nodes)[:2]]
    assert committed == [(1, 6, crc32c(b"before"))] * 2
    assert all(m[1] == 2 for m in metas(nodes)[:2]), "head and middle keep version 2 pending"
    assert read_one(nodes[1])[0].status == storage_pb2.PENDING
    # The cluster manager moves the dead target out; the retry with the same request id succeeds once.
    cluster = nodes[1].routing.cluster
    cluster.states[3] = meta_pb2.OFFLINE
    cluster.version += 1
    reply = write(nodes[1], b"after", request_id="c:5", chain_version=cluster.version)
    assert not reply.duplicate and reply.meta.version == 2
    assert metas(nodes)[:2] == [(2, 0, 5, crc32c(b"after"))] * 2
    [(header, data)] = read(nodes[2], [(1, 0, 0, 100)], chain_version=cluster.version)
    assert header.status == storage_pb2.OK and data == b"after"  # node 2 is the tail now


def test_successor_reuses_a_version_it_already_committed(nodes: dict[int, Node]) -> None:
    """The head aborted version 2 after its successors had committed it; the next write reuses 2."""
    write(nodes[1], b"v1")
    write(nodes[2], b"orphan", from_target=1, version=2, request_id="lost-ack")
    assert metas(nodes) == [(1, 0, 2, crc32c(b"v1")), (2, 0, 6, crc32c(b"orphan")), (2, 0, 6, crc32c(b"orphan"))]
    reply = write(nodes[1], b"winner", request_id="c:2")
    assert reply.meta.version == 2
    assert metas(nodes) == [(2, 0, 6, crc32c(b"winner"))] * 3
    assert all(read_one(node)[1] == b"winner" for node in nodes.values())
    # A retried forward of what a successor already committed is acknowledged as a duplicate.
    again = write(nodes[2], b"winner", from_target=1, version=2, request_id="c:2")
    assert again.duplicate and again.meta.version == 2


def test_concurrent_writers_serialize(nodes: dict[int, Node]) -> None:
    writers, rounds = 4, 4
    size = 200_000
    payloads = {w: bytes([65 + w]) * size for w in range(writers)}
    payloads[-1] = b"initial" * 1000
    write(nodes[1], payloads[-1])
    valid = {crc32c(p): p for p in payloads.values()}
    stop = threading.Event()
    errors: list[str] = []
    ok_reads = [0]

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                write(nodes[1], payloads[w], request_id=f"w{w}:{r}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"writer {w}: {exc!r}")

    def reader(node: Node) -> None:
        while not stop.is_set():
            header, data = read_one(node)
            if header.status == storage_pb2.PENDING:
                continue
            if header.status != storage_pb2.OK or data not in (valid.get(header.meta.crc),):
                errors.append(f"node {node.target}: status {header.status}, {len(data)} bytes, torn or stale")
            ok_reads[0] += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=reader, args=(node,)) for node in nodes.values()]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert not errors, errors[:5]
    assert ok_reads[0] > 0
    final = metas(nodes)
    assert final[0] == final[1] == final[2]
    assert final[0][0] == 1 + writers * rounds and final[0][1] == 0
    content = read_one(nodes[3])[1]
    assert content in [payloads[w] for w in range(writers)]
    assert all(read_one(node)[1] == content for node in nodes.values())


def test_remove_chunks_on_all_replicas(nodes: dict[int, Node]) -> None:
    for index in range(4):
        write(nodes[1], f"chunk {index}".encode(), inode=9, index=index)
    write(nodes[1], b"other inode", inode=10)
    request = storage_pb2.RemoveChunksRequest(chain_id=CHAIN, chain_version=CHAIN_VERSION, inode=9,
                                              from_index=1, request_id="gc:1")
    with pytest.raises(grpc.RpcError) as exc:
        nodes[2].stub.RemoveChunks(request, timeout=10)
    assert rpc_reason(exc) == Reason.STALE_ROUTING
    assert nodes[1].stub.RemoveChunks(request, timeout=10).removed == 3
    for node in nodes.values():
        listed = node.stub.ListChunks(storage_pb2.ChunkListRequest(chain_id=CHAIN), timeout=10)
        assert [(m.chunk.inode, m.chunk.index) for m in listed.chunks] == [(9, 0), (10, 0)]
        assert not listed.more
    assert nodes[1].stub.RemoveChunks(request, timeout=10).removed == 0  # idempotent
    request.from_index = 0
    assert nodes[1].stub.RemoveChunks(request, timeout=10).removed == 1
    for node in nodes.values():
        assert read_one(node, inode=9, index=0)[0].status == storage_pb2.CHUNK_NOT_FOUND
        assert read_one(node, inode=10, index=0)[1] == b"other inode"


def test_list_chunks_paging(nodes: dict[int, Node]) -> None:
    for index in range(5):
        write(nodes[1], b"x", inode=3, index=index)
    listed = nodes[3].stub.ListChunks(storage_pb2.ChunkListRequest(chain_id=CHAIN, inode=3, limit=2), timeout=10)
    assert [m.chunk.index for m in listed.chunks] == [0, 1] and listed.more
    listed = nodes[3].stub.ListChunks(storage_pb2.ChunkListRequest(
        chain_id=CHAIN, inode=3, limit=10, start_after=listed.chunks[-1].chunk), timeout=10)
    assert [m.chunk.index for m in listed.chunks] == [2, 3, 4] and not listed.more
    with pytest.raises(grpc.RpcError) as exc:
        nodes[3].stub.ListChunks(storage_pb2.ChunkListRequest(chain_id=CHAIN + 1), timeout=10)
    assert rpc_reason(exc) == Reason.STALE_ROUTING


def test_compute_position_follows_states() -> None:
    cluster = FakeCluster(addresses={1: "h1:1", 2: "h2:2", 3: "h3:3"})
    cluster.states[1] = meta_pb2.OFFLINE
    table = cluster.table()
    p1, p2, p3 = (compute_position(table, CHAIN, {t}) for t in (1, 2, 3))
    assert not p1.is_head and not p1.is_tail
    assert p2.is_head and p2.predecessor == 0 and p2.successor == 3 and p2.successor_address == "h3:3"
    assert p3.is_tail and p3.predecessor == 2 and not p3.is_head
    cluster.states[3] = meta_pb2.SYNCING
    p2 = compute_position(cluster.table(), CHAIN, {2})
    assert p2.successor == 3 and not p2.is_tail
    assert compute_position(table, CHAIN + 1, {2}) is None
    assert compute_position(table, CHAIN, {42}) is None
    fenced = compute_position(table, CHAIN, {2}, fenced=True)
    assert fenced.state == meta_pb2.OFFLINE and not fenced.is_head


def test_client_updates_beyond_the_cap_are_busy(nodes: dict[int, Node]) -> None:
    """Updates that start at a node are capped so that forwarded ones always find an RPC worker."""
    head = nodes[1]
    head.replicator._admission = threading.BoundedSemaphore(1)
    results: list[object] = []
    with head.replicator.locks.hold((1, ChunkKey(1, 0))):
        blocked = threading.Thread(target=lambda: results.append(write(head, b"first")))
        blocked.start()
        deadline = time.monotonic() + 10
        while head.replicator._admission._value != 0:  # the first write holds the only slot
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as exc:
            write(head, b"second", index=1)
        assert rpc_reason(exc) == Reason.BUSY and is_retryable(Reason.BUSY)
        # Forwarded writes are never capped.
        assert write(nodes[2], b"fwd", index=2, from_target=1, version=1).meta.version == 1
    blocked.join(timeout=10)
    assert results and results[0].meta.version == 1
