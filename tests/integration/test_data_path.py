"""The lean data path against a real cluster: read_into, short-circuit reads and their fallbacks,
and cut-through forwards that die halfway."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import pytest

from chainfs.client import ChainClient
from chainfs.client.rpc import data_path
from chainfs.client.rpc.storage_client import ReadSpec
from chainfs.cluster import LocalCluster
from chainfs.common import wire
from chainfs.common.checksum import crc32c
from chainfs.common.config import MiB
from chainfs.common.addresses import split_address
from chainfs.proto import meta_pb2 as mpb
from tests.chunkfiles import chunk_metas
from chainfs.proto import storage_pb2 as spb

pytestmark = pytest.mark.integration

CHUNK = 256 * 1024


def chunk_files(client: ChainClient, inode: mpb.Inode, index: int) -> list[Path]:
    """The committed chunk file of every replica of one chunk, in chain order."""
    chain = client.routing.chain(inode.layout.chains[index % len(inode.layout.chains)])
    name = f"{inode.id:016x}-{index:08x}.v"
    out = []
    for target in chain.targets:
        shard = Path(target.path) / "chunks" / f"{inode.id % 256:02x}"
        out.extend(sorted(p for p in shard.iterdir() if p.name.startswith(name) and not p.name.endswith(".new")))
    return out


class Spy:
    """Counts calls of a data_path function while calling through to it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        real = getattr(data_path, name)

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(data_path, name, counted)


@pytest.fixture()
def sc_dir(client: ChainClient) -> str:
    path = f"/sc-{random.randrange(1 << 30)}"
    client.mkdir(path, layout=mpb.Layout(chunk_size=CHUNK, stripe_width=2))
    return path


def test_routing_publishes_data_endpoints(cluster: LocalCluster) -> None:
    for node in cluster.routing().nodes:
        assert node.data_address and node.local_socket and node.host_id


def test_read_into_fills_exactly(client: ChainClient, sc_dir: str) -> None:
    data = random.Random(1).randbytes(3 * CHUNK + 1234)
    client.write_file(f"{sc_dir}/f", data)
    for short_circuit in (False, True):
        c = ChainClient(client.address, short_circuit=short_circuit)
        buffer = bytearray(b"\xee") * (len(data) + 100)
        assert c.read_into(f"{sc_dir}/f", buffer) == len(data)
        assert buffer[:len(data)] == data and buffer[len(data):] == b"\xee" * 100  # nothing past the end
        small = bytearray(1000)
        assert c.read_into(f"{sc_dir}/f", small, offset=CHUNK - 500) == 1000
        assert small == data[CHUNK - 500:CHUNK + 500]
        view = memoryview(bytearray(10))
        assert c.read_into(f"{sc_dir}/f", view, offset=len(data) - 4) == 4
        assert bytes(view[:4]) == data[-4:]
        assert c.read_into(f"{sc_dir}/f", bytearray(10), offset=len(data) + 5) == 0


def test_short_circuit_reads_return_committed_bytes(client: ChainClient, sc_dir: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(2).randbytes(4 * CHUNK)
    client.write_file(f"{sc_dir}/f", data)
    opens, network = Spy(monkeypatch, "open_local"), Spy(monkeypatch, "read_items")
    c = ChainClient(client.address)
    assert c.read_file(f"{sc_dir}/f") == data
    assert c.read_file(f"{sc_dir}/f", 1000, 2 * CHUNK) == data[1000:1000 + 2 * CHUNK]
    assert opens.calls > 0 and network.calls == 0, "every replica is local: nothing should cross TCP"
    off = ChainClient(client.address, short_circuit=False)
    before = opens.calls
    assert off.read_file(f"{sc_dir}/f") == data
    assert opens.calls == before and network.calls > 0


def test_short_circuit_falls_back_when_the_file_is_replaced(client: ChainClient, sc_dir: str) -> None:
    path = f"{sc_dir}/f"
    inode = client.write_file(path, b"a" * CHUNK)
    node = next(n for n in client.routing.refresh().nodes
                if n.node_id == client.routing.chain(inode.layout.chains[0]).targets[0].node_id)
    chain = client.routing.chain(inode.layout.chains[0])
    item = spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version,
                        chunk=spb.ChunkId(inode=inode.id, index=0), offset=0, length=CHUNK)
    headers, fds = data_path.open_local(node.local_socket, [item], 5.0, [client.stat(path).capability])
    try:
        assert headers[0].status == spb.OK
        # A new version of the chunk commits: the version the descriptor names is no longer current.
        client.storage.write_chunk(chain.chain_id, inode.id, 0, b"b" * CHUNK, CHUNK)
        view = memoryview(bytearray(CHUNK))
        assert not data_path.read_local_item(fds[0], headers[0], item, view)
    finally:
        for fd in fds:
            os.close(fd)
    assert client.storage.read([ReadSpec(chain.chain_id, inode.id, 0, 0, CHUNK)])[0] == b"b" * CHUNK


def test_short_circuit_never_returns_corrupt_bytes(client: ChainClient, sc_dir: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(3).randbytes(CHUNK)
    inode = client.write_file(f"{sc_dir}/f", data)
    files = chunk_files(client, inode, 0)
    assert len(files) == 3
    for f in files[:2]:  # two of three replicas rot: one byte flipped in each
        raw = bytearray(f.read_bytes())
        raw[100] ^= 0xFF
        f.write_bytes(raw)
    network = Spy(monkeypatch, "read_items")
    for short_circuit in (True, False):
        c = ChainClient(client.address, short_circuit=short_circuit)
        assert c.read_file(f"{sc_dir}/f") == data
        assert c.read_file(f"{sc_dir}/f", 50, 150) == data[50:200]
        for replica in (0, 1):  # reading a rotten replica by name is an error, never its bytes
            try:  # (or the right bytes: the node repairs a copy a read found bad, in the background)
                assert c.read_file(f"{sc_dir}/f", 50, 150, replica=replica) == data[50:200]
            except OSError:
                pass
        assert c.read_file(f"{sc_dir}/f", 50, 150, replica=2) == data[50:200]
    assert network.calls > 0


def test_short_circuit_refuses_a_syncing_or_unknown_replica(cluster: LocalCluster, client: ChainClient,
                                                            sc_dir: str) -> None:
    inode = client.write_file(f"{sc_dir}/f", b"x" * CHUNK)
    chain = client.routing.chain(inode.layout.chains[0])
    node = next(n for n in client.routing.refresh().nodes if n.node_id == chain.targets[0].node_id)
    stale = spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version + 1000,
                         chunk=spb.ChunkId(inode=inode.id, index=0), offset=0, length=CHUNK)
    headers, fds = data_path.open_local(node.local_socket, [stale], 5.0, [client.stat(f"{sc_dir}/f").capability])
    assert fds == [] and headers[0].status == spb.STALE_ROUTING


def test_a_cut_through_forward_that_dies_halfway_commits_nothing(client: ChainClient, sc_dir: str) -> None:
    inode = client.write_file(f"{sc_dir}/f", b"")
    chain = client.routing.refresh() and client.routing.chain(inode.layout.chains[0])
    head = next(n for n in client.routing.table().nodes if n.node_id == chain.targets[0].node_id)
    data = random.Random(4).randbytes(CHUNK)
    header = spb.WriteHeader(chain_id=chain.chain_id, chain_version=chain.version,
                             chunk=spb.ChunkId(inode=inode.id, index=0), offset=0, length=len(data),
                             replace=True, data_crc=crc32c(data), chunk_size=CHUNK, request_id="cut:1",
                             capability=client.storage.capability(inode.id, "w"))
    raw = header.SerializeToString()
    with socket.create_connection(split_address(head.data_address)) as sock:
        wire.authenticate(sock, client.routing.token or "")
        sock.sendall(wire.pack_prefix(wire.OP_WRITE, len(raw), len(data)) + raw + data[:len(data) // 2])
        time.sleep(0)  # the head is forwarding the first half down the chain now
    # The head and its successors saw half a chunk: every replica must end with nothing, not even
    # a pending version (reads answer "not found", never PENDING, once each has given up).
    deadline = time.monotonic() + 30
    cap = client.stat(f"{sc_dir}/f").capability
    while True:
        statuses = []
        for replica in range(3):
            item = spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version,
                                chunk=spb.ChunkId(inode=inode.id, index=0), offset=0, length=CHUNK)
            node = next(n for n in client.routing.table().nodes if n.node_id == chain.targets[replica].node_id)
            view = memoryview(bytearray(CHUNK))
            statuses.extend(h.status for _, h in data_path.read_items(node.data_address, [item], [view], 5.0,
                                                                         capabilities=[cap]))
        if all(s == spb.CHUNK_NOT_FOUND for s in statuses):
            break
        assert time.monotonic() < deadline, f"replicas still hold something: {statuses}"
        time.sleep(0.05)
    metas = chunk_metas(client, f"{sc_dir}/f")
    assert all(not replica for per_replica in metas.values() for replica in per_replica)


def test_data_port_refuses_garbage_and_keeps_serving(client: ChainClient, sc_dir: str) -> None:
    node = client.routing.refresh().nodes[0]
    for junk in (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 16, wire.pack_prefix(wire.OP_WRITE, 1 << 30, 0),
                 wire.pack_prefix(99, 0, 0)):
        with socket.create_connection(split_address(node.data_address), timeout=60) as sock:
            try:
                wire.authenticate(sock, client.routing.token or "")  # the garbage reaches the frame parser
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass  # the node answers (or not) and closes; it must not hang or die
            except (ConnectionResetError, BrokenPipeError, OSError) as exc:
                assert not isinstance(exc, socket.timeout), "the node kept a garbage connection open"
    data = os.urandom(MiB)
    client.write_file(f"{sc_dir}/after", data)
    assert ChainClient(client.address, short_circuit=False).read_file(f"{sc_dir}/after") == data


def test_a_data_port_read_of_no_items_is_answered(client: ChainClient) -> None:
    """Found by the fuzz test: OP_READ of a request with no items got no frame at all (one per
    item), so the peer waited forever; it is INVALID_ARGUMENT now, and the connection serves on."""
    node = client.routing.refresh().nodes[0]
    with socket.create_connection(split_address(node.data_address), timeout=30) as sock:
        wire.authenticate(sock, client.routing.token or "")
        for header in (b"", spb.ReadRequest().SerializeToString(), b"\x10\x05"):  # empty; unknown field
            wire.send_frame(sock, wire.OP_READ, header)
            op, header_len, _ = wire.recv_prefix(sock)
            assert op == wire.OP_ERROR
            assert wire.error_of(wire.recv_header(sock, header_len)).reason.value == "invalid_argument"


def test_short_circuit_switches(client: ChainClient, sc_dir: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    import fsspec

    data = random.Random(5).randbytes(CHUNK + 7)
    client.write_file(f"{sc_dir}/f", data)
    off = fsspec.filesystem("chainfs", address=client.address, short_circuit=False, skip_instance_cache=True)
    on = fsspec.filesystem("chainfs", address=client.address, skip_instance_cache=True)
    assert off.client.storage.short_circuit is False and on.client.storage.short_circuit is True
    assert off.cat_file(f"{sc_dir}/f") == on.cat_file(f"{sc_dir}/f") == data
    with off.open(f"{sc_dir}/f", "rb") as f:
        buffer = bytearray(len(data) + 3)
        assert f.readinto(buffer) == len(data) and buffer[:len(data)] == data
    out = tmp_path / "copy.bin"
    for flags in (["--no-short-circuit"], []):
        proc = subprocess.run([sys.executable, "-m", "chainfs.cli.main", *flags, "get",
                               f"chainfs://{client.address}{sc_dir}/f", str(out)], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == data


def test_a_healthy_cluster_serves_big_reads_without_retries(client: ChainClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item arrives on the first try: no connection drops mid-chunk (e.g. a full socket buffer
    during sendfile), which retries would otherwise hide."""
    client.mkdir("/noretry", layout=mpb.Layout(chunk_size=4 * MiB, stripe_width=4))
    data = os.urandom(64 * MiB)
    client.write_file("/noretry/f", data)
    failures: list[str] = []
    real = data_path.read_items

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            yield from real(*args, **kwargs)
        except Exception as exc:
            failures.append(str(exc))
            raise

    monkeypatch.setattr(data_path, "read_items", watched)
    c = ChainClient(client.address, short_circuit=False)
    buffer = bytearray(len(data))
    for _ in range(3):
        assert c.read_into("/noretry/f", buffer) == len(data) and buffer == data
    assert failures == []
