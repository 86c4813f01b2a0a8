"""End to end against a real 3-node, 3-replica cluster: chunk I/O, replicas, concurrency."""

from __future__ import annotations

import random
import threading

import pytest

from chainfs.client import ChainClient
from chainfs.client.rpc.storage_client import ReadSpec
from chainfs.cluster import LocalCluster
from chainfs.common.config import MiB
from chainfs.proto import meta_pb2 as mpb
from tests.chunkfiles import chunk_metas
from tests.grants import grant

pytestmark = pytest.mark.integration


def test_cluster_forms_chains_on_distinct_nodes(cluster: LocalCluster) -> None:
    table = cluster.routing()
    assert len(table.chains) == 4
    for chain in table.chains:
        nodes = [t.node_id for t in chain.targets]
        assert len(nodes) == 3 and len(set(nodes)) == 3
        assert all(t.state == mpb.SERVING for t in chain.targets)
    heads = {chain.targets[0].node_id for chain in table.chains}
    assert len(heads) > 1, "chain heads should be spread over nodes"


def test_64mib_round_trip_from_every_replica(cluster: LocalCluster, client: ChainClient) -> None:
    client.mkdir("/big", layout=mpb.Layout(chunk_size=1 * MiB, stripe_width=4))
    data = random.Random(64).randbytes(64 * MiB)
    inode = client.write_file("/big/data.bin", data)
    assert inode.length == len(data)
    assert inode.layout.chunk_size == 1 * MiB and len(set(inode.layout.chains)) == 4

    for replica in range(3):
        assert client.read_file("/big/data.bin", replica=replica) == data, f"replica {replica} differs"

    metas = chunk_metas(client, "/big/data.bin")
    total = 0
    for chain_id, per_replica in metas.items():
        views = [{(m.chunk.index, m.version, m.length, m.crc) for m in replica} for replica in per_replica]
        assert views[0], f"chain {chain_id} holds no chunks of the file"
        assert views[0] == views[1] == views[2], f"replicas of chain {chain_id} disagree"
        assert all(m.pending_version == 0 for replica in per_replica for m in replica)
        total += len(views[0])
    assert total == 64


def test_partial_and_ranged_reads(client: ChainClient) -> None:
    client.mkdir("/ranges", layout=mpb.Layout(chunk_size=64 * 1024, stripe_width=3))
    data = random.Random(7).randbytes(300_000)
    client.write_file("/ranges/f", data)
    rnd = random.Random(8)
    for _ in range(40):
        off = rnd.randrange(0, len(data))
        n = rnd.randrange(0, 200_000)
        assert client.read_file("/ranges/f", off, n) == data[off:off + n]
    assert client.read_file("/ranges/f", len(data) + 10, 5) == b""


def test_append_extends_a_file(client: ChainClient) -> None:
    client.mkdir("/append", layout=mpb.Layout(chunk_size=64 * 1024, stripe_width=2))
    first, second = b"a" * 100_000, b"b" * 70_000
    client.write_file("/append/log", first)
    inode = client.write_file("/append/log", second, mode=mpb.APPEND)
    assert inode.length == len(first) + len(second)
    assert client.read_file("/append/log") == first + second


def test_empty_file_and_overwrite(client: ChainClient) -> None:
    client.write_file("/empty", b"")
    assert client.stat("/empty").length == 0 and client.read_file("/empty") == b""
    client.write_file("/over", b"x" * 5000)
    client.write_file("/over", b"y" * 10)
    assert client.read_file("/over") == b"y" * 10


def test_concurrent_writers_to_distinct_files(client: ChainClient) -> None:
    client.mkdir("/many", layout=mpb.Layout(chunk_size=64 * 1024, stripe_width=4))
    payloads = {f"/many/f{i}": random.Random(i).randbytes(200_000 + i) for i in range(8)}
    errors: list[BaseException] = []

    def write(path: str, data: bytes) -> None:
        try:
            ChainClient(client.address).write_file(path, data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=item) for item in payloads.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for path, data in payloads.items():
        assert client.read_file(path) == data


def test_same_chunk_writers_never_yield_torn_reads(cluster: LocalCluster, client: ChainClient) -> None:
    """Writers replace one chunk with uniform patterns; readers of any replica see one whole pattern."""
    client.mkdir("/torn", layout=mpb.Layout(chunk_size=256 * 1024, stripe_width=1))
    size = 256 * 1024
    inode = client.write_file("/torn/chunk", bytes(size))
    chain_id = inode.layout.chains[0]
    patterns = [bytes([v]) * size for v in range(1, 9)]
    stop = threading.Event()
    seen: set[int] = set()
    problems: list[str] = []

    def writer(k: int) -> None:  # beneath the file API: chunk writes into a committed inode
        c = grant(cluster, ChainClient(client.address), inode.id)
        for round_ in range(6):
            c.storage.write_chunk(chain_id, inode.id, 0, patterns[(k + round_) % len(patterns)], size)

    def reader(replica: int | None) -> None:
        c = ChainClient(client.address)
        c.stat("/torn/chunk")  # its read capability
        while not stop.is_set():
            data = c.storage.read([ReadSpec(chain_id, inode.id, 0, 0, size, replica)])[0]
            if len(data) != size or data.count(data[:1]) != size:
                problems.append(f"torn read from replica {replica}")
                return
            seen.add(data[0])

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in (None, 0, 1, 2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert not problems
    assert seen - {0}, "readers should have observed written patterns"
    final = [client.storage.read([ReadSpec(chain_id, inode.id, 0, 0, size, r)])[0] for r in range(3)]
    assert final[0] == final[1] == final[2] and final[0] in patterns


def test_long_write_renews_its_session_lease(client: ChainClient) -> None:
    """A write that lasts longer than its lease's renewal period keeps renewing the session."""
    writer = client.open_writer("/lease/f")
    renewed: list[int] = []
    real = writer.meta.renew_session

    def spy(session_id: str, path: str | None = None):
        reply = real(session_id, path)
        renewed.append(reply.lease_expires_ns)
        return reply

    writer.meta.renew_session = spy  # type: ignore[method-assign]
    writer.renew_every = 0.0  # as if each write came after a long pause
    writer.write(b"a" * 1000)
    writer.write(b"b" * 1000)
    assert len(renewed) == 2 and renewed[1] >= renewed[0] > writer.session.lease_expires_ns - 1
    assert writer.close().length == 2000
    assert client.read_file("/lease/f") == b"a" * 1000 + b"b" * 1000
