"""A cluster started with tls=True: mutual TLS on every gRPC port and data port, against real
processes. Plaintext peers, peers without a client certificate and peers of another CA are
refused; the cluster's own clients write and read (replicated forwards, a node restart)."""

from __future__ import annotations

import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Iterator

import fsspec
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.certs import CertAuthority
from chainfs.common import tls, tls_profiles, wire
from chainfs.common.addresses import split_address
from chainfs.proto import storage_pb2 as spb

from tests.private_home import private_config_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """3 nodes, 3 replicas (every write is forwarded twice), its TLS profile in a private home."""
    with private_config_home(tmp_path_factory.mktemp("xdg")):
        with LocalCluster(tmp_path_factory.mktemp("tls-cluster"), storage_nodes=3, replicas=3,
                          targets_per_node=2, heartbeat_timeout=2.0, fsync=False, tls=True) as c:
            yield c
        assert tls_profiles.lookup(c.address) is None  # stop removed its profile


def data_address(cluster: LocalCluster) -> str:
    table = cluster.routing()
    return table.nodes[0].data_address


def health(channel: grpc.Channel) -> None:
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)


def read_frame() -> bytes:
    body = spb.ReadRequest(items=[spb.ReadItem(length=10)])
    raw = body.SerializeToString()
    return wire.pack_prefix(wire.OP_READ, len(raw), 0) + raw


def answered(sock: socket.socket) -> bool:
    """Whether the data server answered a read request on `sock` with any frame."""
    sock.settimeout(5)
    try:
        sock.sendall(read_frame())
        return len(sock.recv(wire.PREFIX.size)) > 0
    except (OSError, ssl.SSLError):
        return False


def test_keys_are_private_and_the_profile_names_the_cluster(cluster: LocalCluster) -> None:
    assert cluster.tls_dir is not None
    keys = sorted(cluster.tls_dir.glob("*.key"))
    assert {k.name for k in keys} >= {"ca.key", "client.key", "meta.key", "storage-0.key"}
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(tls_profiles.path().stat().st_mode) == 0o600
    assert tls_profiles.lookup(cluster.address) == tls.TlsConfig.from_dir(cluster.tls_dir)


def test_plaintext_grpc_client_cannot_connect(cluster: LocalCluster) -> None:
    for address in (cluster.address, cluster.routing().nodes[0].address):
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as err:
            health(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_data_connection_is_refused(cluster: LocalCluster) -> None:
    with socket.create_connection(split_address(data_address(cluster)), timeout=5) as sock:
        assert not answered(sock)


def test_client_without_certificate_is_refused(cluster: LocalCluster) -> None:
    assert cluster.tls_dir is not None
    ca = (cluster.tls_dir / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)  # trusts the server, shows nothing
    with grpc.secure_channel(cluster.address, creds) as channel, pytest.raises(grpc.RpcError):
        health(channel)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.decode())
    host, port = split_address(data_address(cluster))
    with socket.create_connection((host, port), timeout=5) as raw:
        try:
            sock = ctx.wrap_socket(raw, server_hostname=host)
        except (OSError, ssl.SSLError):
            return  # refused during the handshake (TLS 1.2)
        assert not answered(sock)  # TLS 1.3: the server's alert arrives after the handshake


def test_the_cluster_client_answers_health_over_tls(cluster: LocalCluster) -> None:
    assert cluster.tls_dir is not None
    cfg = tls.TlsConfig.from_dir(cluster.tls_dir)
    with grpc.secure_channel(cluster.address, cfg.channel_credentials()) as channel:
        health(channel)
    host, port = split_address(data_address(cluster))
    with socket.create_connection((host, port), timeout=5) as raw:
        assert answered(cfg.client_context().wrap_socket(raw, server_hostname=host))


def test_client_trusting_another_ca_refuses_the_server(cluster: LocalCluster, tmp_path: Path) -> None:
    other = CertAuthority(tmp_path / "other")
    other.issue("client")
    client = ChainClient(cluster.address, retry_deadline=1.0, tls=other.dir)
    with pytest.raises(ConnectionError):
        client.stat("/")
    cfg = tls.TlsConfig.from_dir(other.dir)
    host, port = split_address(data_address(cluster))
    with socket.create_connection((host, port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        cfg.client_context().wrap_socket(raw, server_hostname=host)
    tls.register([cluster.address], tls.TlsConfig.from_dir(cluster.tls_dir))  # what the cluster set


def test_files_round_trip_through_forwards_and_a_restart(cluster: LocalCluster) -> None:
    client = ChainClient(cluster.address, retry_deadline=30.0, short_circuit=False)  # every byte over TLS
    big = os.urandom(3 * (4 << 20) + 12345)  # several chunks, each forwarded head -> middle -> tail
    client.write_file("/tls/big", big)
    assert client.read_file("/tls/big") == big
    fs = fsspec.filesystem("chainfs", address=cluster.address, short_circuit=False)
    with fs.open("/tls/small.txt", "wb") as f:
        f.write(b"hello over tls\n")
    assert fs.cat("/tls/small.txt") == b"hello over tls\n"

    cluster.restart_storage(1)
    cluster.wait_healthy(60)
    assert client.read_file("/tls/big") == big
    after = os.urandom(1 << 20)
    client.write_file("/tls/after-restart", after)
    # Every replica holds it: read each copy (the restarted node's too) over its TLS data port.
    table = cluster.routing()
    for replica in range(3):
        assert client.read_file("/tls/after-restart", replica=replica) == after, replica
    assert fs.cat("/tls/big") == big
    assert len(table.nodes) == 3
