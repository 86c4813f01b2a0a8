"""Resource limits of a real storage node's data port: a client that stalls inside a frame (before
or after authenticating) is dropped within the stall deadline, while other clients are served."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster, auth_files
from chainfs.cluster.limits import DataLimits
import grpc

from chainfs.common import auth, rpc, wire
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.addresses import split_address
from chainfs.common.scrape import scrape
from chainfs.proto import storage_pb2_grpc

pytestmark = pytest.mark.integration

STALL_S = 1.0


@pytest.fixture(scope="module")
def stall_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One node whose data port drops a peer silent for STALL_S inside a frame."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHAINFS_STALL_TIMEOUT", str(STALL_S))  # read by the spawned storage server
        with LocalCluster(tmp_path_factory.mktemp("stall"), storage_nodes=1, replicas=1,
                          targets_per_node=1, heartbeat_timeout=5.0) as c:
            yield c


def closed_within(sock: socket.socket, deadline: float) -> float:
    """Seconds until the node closes `sock` (EOF or reset); fails past `deadline`."""
    sock.settimeout(deadline)
    start = time.monotonic()
    try:
        while sock.recv(1 << 16):
            pass  # an error frame may come first; the close is what counts
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the node kept a stalled connection open for {deadline} s")
    return time.monotonic() - start


def test_stalled_data_clients_are_dropped_while_others_are_served(stall_cluster: LocalCluster) -> None:
    client = ChainClient(stall_cluster.address, retry_deadline=30.0)
    address = split_address(stall_cluster.routing().nodes[0].data_address)
    prefix = wire.pack_prefix(wire.OP_WRITE, 10, 1000)

    # 1. Half a prefix before authenticating.
    half = socket.create_connection(address)
    started = time.monotonic()  # the next byte starts the first stall clock: no drop before started + STALL_S
    half.sendall(prefix[:5])
    # 2. Authenticated, then a whole prefix and part of its header.
    mid = socket.create_connection(address)
    wire.authenticate(mid, client.routing.token)
    mid.sendall(prefix + b"\x0a\x02")
    # 3. Idle between frames, authenticated: a pooled connection, never dropped for idling.
    idle = socket.create_connection(address)
    wire.authenticate(idle, client.routing.token)

    payload = bytes(range(256)) * 4096
    client.write_file("/served-while-stalled", payload)  # another client is served meanwhile
    assert client.read_file("/served-while-stalled") == payload

    slack = STALL_S + 10.0  # the deadline plus scheduling slack on a loaded 2-core machine
    for sock in (half, mid):
        with sock:
            closed_within(sock, slack - (time.monotonic() - started))
    assert time.monotonic() - started >= STALL_S * 0.9, "dropped before the deadline"

    with idle:  # still open after the stalled ones were dropped: it was between frames
        idle.settimeout(0.2)
        with pytest.raises(TimeoutError):
            idle.recv(1)
    metrics = scrape(f"127.0.0.1:{stall_cluster.state.storage[0].metrics_port}")
    assert metrics.get_one("chainfs_data_connections_dropped_total", reason="stalled") >= 2


@pytest.mark.parametrize("part", ["header", "payload"])
def test_a_frame_trickled_byte_by_byte_is_dropped(stall_cluster: LocalCluster, part: str) -> None:
    """Each byte comes before the stall timeout, but the header (or the payload) as a whole does not."""
    client = ChainClient(stall_cluster.address, retry_deadline=30.0)
    address = split_address(stall_cluster.routing().nodes[0].data_address)
    with socket.create_connection(address) as sock:
        wire.authenticate(sock, client.routing.token)
        if part == "header":
            sock.sendall(wire.pack_prefix(wire.OP_WRITE, 100, 10))
        else:  # a whole (unusable) header: the node refuses it and drains the payload, which trickles
            sock.sendall(wire.pack_prefix(wire.OP_WRITE, 4, 1000) + b"\x0a\x02\x08\x01")
        started = time.monotonic()
        try:
            while time.monotonic() - started < STALL_S + 10.0:
                sock.sendall(b"\x0a")
                time.sleep(STALL_S / 4)  # the trickle's own pace, not synchronization
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            closed_within(sock, 1.0)
        took = time.monotonic() - started
    assert STALL_S * 0.9 <= took < STALL_S + 10.0, took

def test_a_stalled_grpc_write_stream_is_cancelled(stall_cluster: LocalCluster) -> None:
    client = ChainClient(stall_cluster.address, retry_deadline=30.0)
    node = stall_cluster.routing().nodes[0]
    stub = storage_pb2_grpc.StorageStub(rpc.ChannelPool().get(node.address, client.routing.token))
    release = threading.Event()

    def silent():  # a client stream that opens and then sends nothing
        release.wait(60)
        return
        yield

    started = time.monotonic()
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.Write(silent(), timeout=30)
        took = time.monotonic() - started
    finally:
        release.set()
    assert err.value.code() == grpc.StatusCode.CANCELLED
    assert STALL_S * 0.9 <= took < STALL_S + 10.0, took
    payload = b"still serving" * 1000
    client.write_file("/after-a-stalled-stream", payload)
    assert client.read_file("/after-a-stalled-stream") == payload


CAP = 6
PER_CLIENT = 3


@pytest.fixture(scope="module")
def capped_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One node whose data port holds at most CAP connections, PER_CLIENT of them per client; set
    by the storage server's flags (LocalCluster's limits), not the environment."""
    # silent test connections stay (stall_cluster's environment may still be set)
    limits = DataLimits(stall_timeout=30, max_connections=CAP, max_per_client=PER_CLIENT)
    with LocalCluster(tmp_path_factory.mktemp("capped"), storage_nodes=1, replicas=1,
                      targets_per_node=1, heartbeat_timeout=5.0, limits=limits) as c:
        assert "--data-max-per-client" in Path(f"/proc/{c.state.storage[0].pid}/cmdline").read_text()
        yield c


def refused(sock: socket.socket) -> bool:
    """True if the node answered this fresh connection with BUSY (it says nothing to accepted ones)."""
    sock.settimeout(0.5)
    try:
        op, header_len, _ = wire.recv_prefix(sock)
    except TimeoutError:
        return False
    assert op == wire.OP_ERROR
    assert wire.error_of(wire.recv_header(sock, header_len)).reason.value == "busy"
    return True


def test_data_connections_past_the_cap_get_busy_and_clients_retry(capped_cluster: LocalCluster) -> None:
    address = split_address(capped_cluster.routing().nodes[0].data_address)
    held: list[socket.socket] = []
    try:
        for _ in range(CAP + 1):
            sock = socket.create_connection(address)
            if refused(sock):
                sock.close()
                break
            held.append(sock)
        else:
            pytest.fail(f"the node accepted {CAP + 1} data connections")
        assert len(held) == CAP  # nothing else holds one of this idle node's connections
        client = ChainClient(capped_cluster.address, retry_deadline=30.0)
        done: list[bytes] = []

        def write_and_read() -> None:  # refused with BUSY (retryable) until a slot is free
            client.write_file("/past-the-cap", b"x" * 100_000)
            done.append(client.read_file("/past-the-cap"))

        writer = threading.Thread(target=write_and_read, daemon=True)
        writer.start()
        writer.join(1.0)
        assert not done, "the write went through with every data connection taken"
        held.pop().close()
        writer.join(30)
        assert done == [b"x" * 100_000]
        metrics = scrape(f"127.0.0.1:{capped_cluster.state.storage[0].metrics_port}")
        assert metrics.get_one("chainfs_data_connections_dropped_total", reason="refused") >= 1
    finally:
        for sock in held:
            sock.close()


def test_one_client_cannot_take_every_data_connection(capped_cluster: LocalCluster) -> None:
    """Past PER_CLIENT connections of one token's holder, the node answers its OP_AUTH with BUSY;
    other clients still get theirs, and a slot the holder frees is its own again."""
    address = split_address(capped_cluster.routing().nodes[0].data_address)
    alice = auth.issue(auth_files.load_secret(capped_cluster.root), "user", "alice")
    metrics_at = f"127.0.0.1:{capped_cluster.state.storage[0].metrics_port}"
    before = scrape(metrics_at).get_one("chainfs_data_connections_dropped_total", reason="per_client") or 0
    held: list[socket.socket] = []
    try:
        for _ in range(PER_CLIENT):
            held.append(socket.create_connection(address, timeout=10))
            wire.authenticate(held[-1], alice)
        with socket.create_connection(address, timeout=10) as extra:
            with pytest.raises(ChainfsError) as err:
                wire.authenticate(extra, alice)
            assert err.value.reason is Reason.BUSY
            assert extra.recv(1) == b""  # and closed
        # another client (the root user) is served while alice holds her share
        client = ChainClient(capped_cluster.address, retry_deadline=30.0)
        client.write_file("/per-client-cap", b"y" * 100_000)
        assert client.read_file("/per-client-cap") == b"y" * 100_000
        held.pop().close()
        deadline = time.monotonic() + 10  # the node notices the close on its own thread
        while True:
            again = socket.create_connection(address, timeout=10)
            try:
                wire.authenticate(again, alice)
                held.append(again)
                break
            except ChainfsError as exc:
                again.close()
                assert exc.reason is Reason.BUSY and time.monotonic() < deadline, exc
                time.sleep(0.05)  # poll interval while the node's thread notices the close
    finally:
        for sock in held:
            sock.close()
    after = scrape(metrics_at).get_one("chainfs_data_connections_dropped_total", reason="per_client")
    assert after >= before + 1
