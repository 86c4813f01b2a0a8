"""Chunk capabilities against real processes: storage nodes refuse chunk writes, reads and removals
without a capability the metaserver signed for that inode and right, on every path (gRPC, the data
port, the short-circuit socket); a user cannot touch the chunks of a file it did not open, nor a
prefix token those outside its prefix; and readers and writers that outlive their capabilities
(a short --capability-ttl here) get new ones without noticing."""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Iterator

import fsspec
import grpc
import pytest

from chainfs.client import ChainClient
from chainfs.client.files.file_edit import remove_chunks_from
from chainfs.client.rpc import data_path
from chainfs.client.rpc.storage_client import ReadSpec
from chainfs.cluster import LocalCluster, auth_files
from chainfs.common import auth, capabilities, wire
from chainfs.common.addresses import split_address
from chainfs.common.checksum import crc32c
from chainfs.common.errors import ChainfsError, reason_of
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb

from tests.private_home import private_config_home

pytestmark = pytest.mark.integration

TTL = 4.0  # seconds: short, so that the refresh tests see capabilities lapse
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with private_config_home(tmp_path_factory.mktemp("xdg")):
        with LocalCluster(tmp_path_factory.mktemp("caps-cluster"), storage_nodes=3, replicas=3,
                          targets_per_node=1, heartbeat_timeout=2.0, fsync=False, capability_ttl=TTL) as c:
            yield c


def secret(cluster: LocalCluster) -> bytes:
    return auth_files.load_secret(cluster.root)


def user(cluster: LocalCluster, name: str, prefix: str = "") -> ChainClient:
    return ChainClient(cluster.address, token=auth.issue(secret(cluster), "user", name, prefix=prefix),
                       retry_deadline=10)


def layout() -> mpb.Layout:
    return mpb.Layout(chunk_size=CHUNK, stripe_width=1)


# ---- raw requests to a node, each returning the reason it was refused ("ok" if it was not) ----

def _grpc(node: mpb.NodeInfo, method: str, token: str, request: object, stream: bool = False) -> str:
    with grpc.insecure_channel(node.address) as channel:
        md = ((auth.METADATA_KEY, f"Bearer {token}"),)
        ser, des = (lambda m: m.SerializeToString()), (lambda b: b)
        try:
            if method == "Write":
                channel.stream_unary("/chainfs.Storage/Write", ser, des)(iter(request), timeout=10, metadata=md)
            elif stream:
                list(channel.unary_stream(f"/chainfs.Storage/{method}", ser, des)(request, timeout=10, metadata=md))
            else:
                channel.unary_unary(f"/chainfs.Storage/{method}", ser, des)(request, timeout=10, metadata=md)
        except grpc.RpcError as err:
            return reason_of(err).value
    return "ok"


def _data(node: mpb.NodeInfo, token: str, op: int, header: bytes, payload: bytes = b"") -> str:
    host, port = split_address(node.data_address)
    with socket.create_connection((host, port), timeout=10) as sock:
        wire.authenticate(sock, token)
        sock.sendall(wire.pack_prefix(op, len(header), len(payload)) + header + payload)
        op_back, header_len, _ = wire.recv_prefix(sock)
        raw = wire.recv_header(sock, header_len)
        return wire.error_of(raw).reason.value if op_back == wire.OP_ERROR else "ok"


def _local(node: mpb.NodeInfo, request: spb.ReadRequest) -> str:
    try:
        _, fds = data_path.open_local(node.local_socket, list(request.items), 10, list(request.capabilities))
    except ChainfsError as exc:
        return exc.reason.value
    for fd in fds:
        os.close(fd)
    return "ok"


class Target:
    """A one-chunk file of alice's and the three ways to each of its chain's nodes."""

    def __init__(self, cluster: LocalCluster, path: str, data: bytes) -> None:
        self.cluster = cluster
        self.alice = user(cluster, "alice")
        self.alice.mkdir("/caps", parents=True, layout=layout())
        self.inode = self.alice.write_file(path, data)
        self.path, self.data = path, data
        table = cluster.routing()
        self.chain = next(c for c in table.chains if c.chain_id == self.inode.layout.chains[0])
        nodes = {n.node_id: n for n in table.nodes}
        self.head = nodes[self.chain.targets[0].node_id]
        self.tail = nodes[self.chain.targets[-1].node_id]
        self.token = self.alice.meta.token or ""

    def header(self, cap: str, length: int) -> spb.WriteHeader:
        return spb.WriteHeader(chain_id=self.chain.chain_id, chain_version=self.chain.version,
                               chunk=spb.ChunkId(inode=self.inode.id, index=0), length=length, replace=True,
                               data_crc=crc32c(b"X" * length),
                               chunk_size=CHUNK, request_id=f"t:{time.monotonic_ns()}", capability=cap)

    def read_request(self, cap: str) -> spb.ReadRequest:
        item = spb.ReadItem(chain_id=self.chain.chain_id, chain_version=self.chain.version,
                            chunk=spb.ChunkId(inode=self.inode.id, index=0), length=len(self.data))
        return spb.ReadRequest(items=[item], capabilities=[cap] if cap else [])

    def paths(self) -> dict[str, Callable[[str], str]]:
        """Each chunk path, given a capability, answers its verdict."""
        def grpc_write(cap: str) -> str:
            h = self.header(cap, 4)
            return _grpc(self.head, "Write", self.token, [spb.WriteRequest(header=h), spb.WriteRequest(data=b"XXXX")])

        def data_write(cap: str) -> str:
            return _data(self.head, self.token, wire.OP_WRITE, self.header(cap, 4).SerializeToString(), b"XXXX")

        def grpc_read(cap: str) -> str:
            return _grpc(self.tail, "Read", self.token, self.read_request(cap), stream=True)

        def data_read(cap: str) -> str:
            return _data(self.tail, self.token, wire.OP_READ, self.read_request(cap).SerializeToString())

        def local_read(cap: str) -> str:
            return _local(self.tail, self.read_request(cap))

        def remove(cap: str) -> str:
            request = spb.RemoveChunksRequest(chain_id=self.chain.chain_id, chain_version=self.chain.version,
                                              inode=self.inode.id, from_index=0, request_id="t:rm", capability=cap)
            return _grpc(self.head, "RemoveChunks", self.token, request)

        return {"grpc_write": grpc_write, "data_write": data_write, "grpc_read": grpc_read,
                "data_read": data_read, "local_read": local_read, "remove": remove}


def test_every_chunk_path_refuses_a_bad_capability(cluster: LocalCluster) -> None:
    t = Target(cluster, "/caps/target", b"alice's bytes " * 100)
    assert t.tail.local_socket, "the short-circuit socket is one of the paths under test"
    sec, other = secret(cluster), b"o" * 32
    holder = auth.principal(auth.verify(sec, t.token))
    needs = {"grpc_write": "w", "data_write": "w", "remove": "d"}
    for name, attempt in t.paths().items():
        right = needs.get(name, "r")
        wrong_right = "r" if right != "r" else "wd"
        refusals = {
            "none": ("", "unauthenticated"),
            "forged": (capabilities.issue(other, t.inode.id, "rwd", 60, holder), "unauthenticated"),
            "tampered": (capabilities.issue(sec, t.inode.id, "rwd", 60, holder)[:-4] + "AAAA", "unauthenticated"),
            "expired": (capabilities.issue(sec, t.inode.id, "rwd", -1, holder), "unauthenticated"),
            "another inode": (capabilities.issue(sec, t.inode.id + 1, "rwd", 60, holder), "permission_denied"),
            "wrong right": (capabilities.issue(sec, t.inode.id, wrong_right, 60, holder), "permission_denied"),
            "another holder": (capabilities.issue(sec, t.inode.id, "rwd", 60, "user:mallory"), "permission_denied"),
            "a token": (t.token, "unauthenticated"),
        }
        for case, (cap, expected) in refusals.items():
            if name == "local_read" and case == "another holder":
                continue  # no token on the local socket: the holder cannot be checked there
            assert attempt(cap) == expected, f"{name} with {case} capability"
        if name in ("grpc_read", "data_read", "local_read"):
            assert attempt(capabilities.issue(sec, t.inode.id, "r", 60, holder)) == "ok", name
    assert t.alice.read_file(t.path) == t.data  # no refused write or removal changed anything
    # the good capability works on the write and removal paths too (last: it changes the file)
    good = capabilities.issue(sec, t.inode.id, "rwd", 60, holder)
    assert t.paths()["data_write"](good) == "ok"
    assert t.paths()["remove"](good) == "ok"


def test_users_touch_only_the_chunks_the_metaserver_let_them(cluster: LocalCluster) -> None:
    t = Target(cluster, "/caps/owned", b"owned " * 1000)
    bob = user(cluster, "bob")
    bob.stat(t.path)  # bob may read the file: a read capability, not a write one
    chain = t.inode.layout.chains[0]
    with pytest.raises(PermissionError):
        bob.storage.write_chunk(chain, t.inode.id, 0, b"bob was here", CHUNK)
    with pytest.raises(PermissionError):
        remove_chunks_from(bob, t.inode, 0)
    # alice's write capability is hers: bob cannot use a copy of it
    session = t.alice.meta.open_write(t.path, mpb.APPEND, "alice")
    bob.meta.caps.learn(t.inode.id, session.inode.capability, "rwd")
    with pytest.raises(PermissionError):
        bob.storage.write_chunk(chain, t.inode.id, 0, b"bob was here", CHUNK)
    t.alice.meta.close_write(session.session_id, session.inode.length, commit=False)
    assert bob.read_file(t.path) == t.data
    # a prefix token gets no capability outside its prefix, so naming the inode gets it nothing
    carol = user(cluster, "carol", prefix="/tenant-c")
    with pytest.raises(PermissionError):
        carol.stat(t.path)
    with pytest.raises(PermissionError):
        carol.storage.read([ReadSpec(chain, t.inode.id, 0, 0, 16)])
    carol.write_file("/tenant-c/mine", b"carol's")
    assert carol.read_file("/tenant-c/mine") == b"carol's"
    assert t.alice.read_file(t.path) == t.data


def wait_until_expired(cap: str, deadline_s: float = 30.0) -> None:
    """Waits (polling the clock, with a deadline) until `cap` has lapsed."""
    expires = capabilities.peek(cap).expires_ms / 1000
    deadline = time.monotonic() + deadline_s
    while time.time() <= expires + 0.2:
        assert time.monotonic() < deadline, "capability never expired"
        time.sleep(0.05)


def test_long_writer_and_readers_outlive_their_capabilities(cluster: LocalCluster) -> None:
    alice = user(cluster, "alice")
    alice.mkdir("/caps", parents=True, layout=layout())
    pieces = [bytes([65 + k]) * CHUNK for k in range(3)]
    writer = alice.open_writer("/caps/long", mpb.REPLACE)
    first = writer.session.inode.capability
    writer.write(pieces[0])
    wait_until_expired(first)
    writer.write(pieces[1])  # the session's capability is renewed before the chunk goes out
    writer.write(pieces[2])
    inode = writer.close()
    assert alice.meta.caps.refreshes >= 1
    # the writer reads what it wrote by inode (as the KV cache does from its refs) once every
    # capability it got while writing has lapsed: the closed session's is replaced by a stat's
    wait_until_expired(capabilities.issue(b"x" * 32, 0, "r", TTL))
    assert alice.read_ranges([(inode, 0, inode.length)])[0] == b"".join(pieces)
    # readers: ChainClient (stat at open), fsspec's file, and a batched StatMany read
    reader = user(cluster, "reader")
    stat = reader.stat("/caps/long")
    assert reader.read_ranges([(stat, 0, CHUNK)])[0] == pieces[0]
    fs = fsspec.filesystem("chainfs", address=cluster.address, token=reader.meta.token, skip_instance_cache=True)
    with fs.open("/caps/long", "rb", block_size=CHUNK) as f:
        assert f.read(CHUNK) == pieces[0]
        wait_until_expired(stat.capability)
        assert f.read() == pieces[1] + pieces[2]  # a new stat behind the scenes, same inode
    [again] = reader.meta.stat_many(["/caps/long"])
    wait_until_expired(again.capability)
    assert reader.read_ranges([(again, 0, inode.length)])[0] == b"".join(pieces)
    assert reader.meta.caps.refreshes >= 1 and fs.client.meta.caps.refreshes >= 1


def test_a_refused_capability_is_renewed_once(cluster: LocalCluster) -> None:
    """A node that refuses a capability the client still thinks valid (a clock ahead of the
    client's, say): the client gets a new one and the request goes through."""
    alice = user(cluster, "alice")
    alice.mkdir("/caps", parents=True, layout=layout())
    inode = alice.write_file("/caps/skew", b"s" * CHUNK)
    reader = user(cluster, "reader2")
    reader.stat("/caps/skew")
    forged = capabilities.issue(b"f" * 32, inode.id, "r", 3600)
    reader.meta.caps.learn(inode.id, forged, "r", lambda: reader.meta.stat("/caps/skew"))
    assert reader.read_ranges([(inode, 0, CHUNK)])[0] == b"s" * CHUNK
    assert reader.meta.caps.get(inode.id, "r") != forged


def test_insecure_clusters_issue_and_check_nothing(tmp_path) -> None:
    with LocalCluster(tmp_path / "open", storage_nodes=1, replicas=1, targets_per_node=1,
                      heartbeat_timeout=2.0, fsync=False, auth=False) as c:
        client = ChainClient(c.address, token=False)
        inode = client.write_file("/f", b"open")
        assert client.stat("/f").capability == "" and inode.capability == ""
        assert client.read_file("/f") == b"open"
        # a client writing chunks by inode alone is not stopped without tokens
        client.storage.write_chunk(inode.layout.chains[0], inode.id, 0, b"OPEN", inode.layout.chunk_size)
        assert client.read_file("/f") == b"OPEN"
