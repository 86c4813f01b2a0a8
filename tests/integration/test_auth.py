"""Authentication against real processes (LocalCluster turns it on by default): every RPC of every
chainfs service is refused without a token or with a forged one; user tokens cannot act as nodes;
a node cannot speak for another; a prefix token stays inside its subtree; the data port refuses a
connection that does not authenticate first; `chainfs user add` issues a working token."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import fsspec
import grpc
import pytest
from google.protobuf import message_factory

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster import auth_files
from chainfs.common import auth, credentials, wire
from chainfs.common.addresses import split_address
from chainfs.proto import meta_pb2, meta_pb2_grpc, storage_pb2

from tests.private_home import private_config_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """3 nodes, 2 replicas, its credentials in a private home (so `stop` can be seen removing them)."""
    with private_config_home(tmp_path_factory.mktemp("xdg")):
        with LocalCluster(tmp_path_factory.mktemp("auth-cluster"), storage_nodes=3, replicas=2,
                          targets_per_node=2, heartbeat_timeout=2.0, fsync=False) as c:
            yield c
        assert credentials.lookup(c.address) is None  # stop removed its credentials


def secret(cluster: LocalCluster) -> bytes:
    return auth_files.load_secret(cluster.root)


def all_methods() -> list[tuple[str, object, bool, bool]]:
    """(full method name, request class, client streaming, server streaming) of every chainfs RPC."""
    out = []
    for module in (meta_pb2, storage_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                cls = message_factory.GetMessageClass(m.input_type)
                out.append((f"/{service.full_name}/{m.name}", cls, m.client_streaming, m.server_streaming))
    return out


def call(channel: grpc.Channel, method: str, cls, cstream: bool, sstream: bool,
         metadata: tuple = ()) -> grpc.StatusCode:
    ser, des = (lambda m: m.SerializeToString()), (lambda b: b)
    try:
        if cstream:
            channel.stream_unary(method, ser, des)(iter([cls()]), timeout=5, metadata=metadata)
        elif sstream:
            list(channel.unary_stream(method, ser, des)(cls(), timeout=5, metadata=metadata))
        else:
            channel.unary_unary(method, ser, des)(cls(), timeout=5, metadata=metadata)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def servers(cluster: LocalCluster) -> list[str]:
    return [cluster.address] + [n.address for n in cluster.routing().nodes]


def test_credentials_file_and_secret_are_private(cluster: LocalCluster) -> None:
    assert stat.S_IMODE(auth_files.secret_path(cluster.root).stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.path().stat().st_mode) == 0o600
    assert credentials.lookup(cluster.address) == cluster.root_token
    # ChainClient(address) and fsspec find the token without being told.
    c = ChainClient(cluster.address)
    c.write_file("/open/a", b"hello")
    fs = fsspec.filesystem("chainfs", address=cluster.address, skip_instance_cache=True)
    assert fs.cat_file("/open/a") == b"hello"


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer cfs1.e30.AAAA"),),
                                      (("authorization", "Bearer nonsense"),)],
                         ids=["none", "forged", "malformed"])
def test_every_rpc_refused_without_a_valid_token(cluster: LocalCluster, metadata: tuple) -> None:
    methods = all_methods()
    assert len(methods) > 20
    for address in servers(cluster)[:2]:  # the metaserver and one storage node
        with grpc.insecure_channel(address) as channel:
            for method, cls, cs, ss in methods:
                service = method.split("/")[1]
                on_meta = service.startswith("chainfs.Namespace") or service.startswith("chainfs.ClusterManager")
                if on_meta != (address == cluster.address):
                    continue
                assert call(channel, method, cls, cs, ss, metadata) == grpc.StatusCode.UNAUTHENTICATED, method


def test_token_of_another_secret_and_expired_token_refused(cluster: LocalCluster) -> None:
    other = auth.issue(os.urandom(32), "user", "root", root=True)
    expired = auth.issue(secret(cluster), "user", "old", ttl=-1)
    for token in (other, expired):
        with pytest.raises(PermissionError):
            ChainClient(cluster.address, token=token, retry_deadline=2).stat("/")


def test_user_tokens_cannot_act_as_nodes(cluster: LocalCluster) -> None:
    node = cluster.routing().nodes[0]
    root_user = (("authorization", f"Bearer {cluster.root_token}"),)
    with grpc.insecure_channel(cluster.address) as channel:
        stub = meta_pb2_grpc.ClusterManagerStub(channel)
        for rpc, request in ((stub.Register, meta_pb2.RegisterRequest(address="127.0.0.1:1")),
                             (stub.Heartbeat, meta_pb2.HeartbeatRequest(node_id=node.node_id, address="127.0.0.1:1"))):
            with pytest.raises(grpc.RpcError) as err:
                rpc(request, timeout=5, metadata=root_user)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert cluster.routing().nodes[0].address == node.address


def test_a_node_cannot_speak_for_another(cluster: LocalCluster) -> None:
    table = cluster.routing()
    victim = table.nodes[0]
    impostor = (("authorization", f"Bearer {auth.issue(secret(cluster), 'node', 'storage-99')}"),)
    with grpc.insecure_channel(cluster.address) as channel:
        stub = meta_pb2_grpc.ClusterManagerStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Heartbeat(meta_pb2.HeartbeatRequest(node_id=victim.node_id, address="127.0.0.1:9"),
                           timeout=5, metadata=impostor)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            stub.Register(meta_pb2.RegisterRequest(node_id=victim.node_id, address="127.0.0.1:9"),
                          timeout=5, metadata=impostor)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for junk in ("nonsense", "127.0.0.1:0", "a b:80", "h:99999", ""):
            with pytest.raises(grpc.RpcError) as err:
                stub.Register(meta_pb2.RegisterRequest(address=junk), timeout=5, metadata=impostor)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, junk
    assert {n.node_id: n.address for n in cluster.routing().nodes}[victim.node_id] == victim.address


def test_prefix_token_stays_inside_its_prefix(cluster: LocalCluster) -> None:
    admin = ChainClient(cluster.address)
    admin.write_file("/secret/x", b"not yours")
    admin.mkdir("/tenant-a")
    token = auth.issue(secret(cluster), "user", "alice", prefix="/tenant-a")
    alice = ChainClient(cluster.address, token=token, retry_deadline=5)
    alice.write_file("/tenant-a/f", b"mine")
    assert alice.read_file("/tenant-a/f") == b"mine"
    for action in (lambda: alice.read_file("/secret/x"), lambda: alice.write_file("/secret/y", b"z"),
                   lambda: alice.write_file("/tenant-a/../secret/z", b"z"), lambda: alice.ls("/"),
                   lambda: alice.rename("/tenant-a/f", "/stolen")):
        with pytest.raises(PermissionError):
            action()
    assert admin.read_file("/secret/x") == b"not yours"
    for gone in ("/secret/y", "/stolen"):
        with pytest.raises(FileNotFoundError):
            admin.stat(gone)


def test_data_port_refuses_unauthenticated_connections(cluster: LocalCluster) -> None:
    host, port = split_address(cluster.routing().nodes[0].data_address)
    request = storage_pb2.ReadRequest(items=[storage_pb2.ReadItem(length=10)]).SerializeToString()
    for first in (wire.pack_prefix(wire.OP_READ, len(request), 0) + request,
                  wire.pack_prefix(wire.OP_AUTH, 9, 0) + b"cfs1.x.yy"):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(first)
            op, header_len, _ = wire.recv_prefix(sock)
            assert op == wire.OP_ERROR
            assert wire.error_of(wire.recv_header(sock, header_len)).reason.value == "unauthenticated"
            try:  # and the node closed it (a reset: it left our unread request behind)
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    with socket.create_connection((host, port), timeout=5) as sock:
        wire.authenticate(sock, cluster.root_token or "")  # a valid token is accepted


def test_user_add_cli_end_to_end(cluster: LocalCluster, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "chainfs.cli.main"]
    out = subprocess.run([*cli, "user", "add", "bob", "--dir", str(cluster.root), "--prefix", "/bob"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert auth.verify(secret(cluster), out) == auth.Identity("user", "bob", prefix="/bob")
    token_file = tmp_path / "bob.token"
    token_file.write_text(out + "\n")
    ChainClient(cluster.address).mkdir("/bob")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "empty-home")}  # no credentials file
    url = f"chainfs://{cluster.address}"
    put = subprocess.run([*cli, "--token-file", str(token_file), "cp", "-", f"{url}/bob/f"], input="hi",
                         capture_output=True, text=True, timeout=60, env=env)
    assert put.returncode == 0, put.stderr
    denied = subprocess.run([*cli, "--token-file", str(token_file), "cat", f"{url}/open/a"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert denied.returncode == 1 and "limited to /bob" in denied.stderr
    anonymous = subprocess.run([*cli, "cat", f"{url}/bob/f"], capture_output=True, text=True, timeout=60, env=env)
    assert anonymous.returncode == 1 and "no token" in anonymous.stderr
    env["CHAINFS_TOKEN_FILE"] = str(token_file)
    got = subprocess.run([*cli, "cat", f"{url}/bob/f"], capture_output=True, text=True, timeout=60, env=env)
    assert got.stdout == "hi", got.stderr


def test_user_tokens_cannot_forward_writes(cluster: LocalCluster) -> None:
    """A forward (a head's pending version) from a user token is refused on both write paths."""
    table = cluster.routing()
    chain = table.chains[0]
    node = {n.node_id: n for n in table.nodes}[chain.targets[-1].node_id]
    header = storage_pb2.WriteHeader(chain_id=chain.chain_id, chain_version=chain.version,
                                     chunk=storage_pb2.ChunkId(inode=999999, index=0), length=1,
                                     chunk_size=1 << 20, version=7, from_target=chain.targets[0].target_id)
    host, port = split_address(node.data_address)
    with socket.create_connection((host, port), timeout=5) as sock:
        wire.authenticate(sock, cluster.root_token or "")
        raw = header.SerializeToString()
        sock.sendall(wire.pack_prefix(wire.OP_WRITE, len(raw), 1) + raw + b"x")
        op, header_len, _ = wire.recv_prefix(sock)
        assert op == wire.OP_ERROR
        assert wire.error_of(wire.recv_header(sock, header_len)).reason.value == "permission_denied"
    with grpc.insecure_channel(node.address) as channel:
        stream = channel.stream_unary("/chainfs.Storage/Write", lambda m: m.SerializeToString(), lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            stream(iter([storage_pb2.WriteRequest(header=header), storage_pb2.WriteRequest(data=b"x")]),
                   timeout=5, metadata=(("authorization", f"Bearer {cluster.root_token}"),))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_write_session_belongs_to_whoever_opened_it(cluster: LocalCluster) -> None:
    """Another token (root included) can neither renew nor close a session, one by one or in a
    batch; the refusal leaves the session open for its owner, whose close commits."""
    from chainfs.client.rpc.meta_client import MetaClient
    alice = MetaClient(cluster.address, token=auth.issue(secret(cluster), "user", "alice"), retry_deadline=5)
    others = [MetaClient(cluster.address, token=t, retry_deadline=5)
              for t in (auth.issue(secret(cluster), "user", "bob"), cluster.root_token)]
    session = alice.open_write("/sessions/owned", meta_pb2.REPLACE, "alice-client")
    for other in others:
        with pytest.raises(PermissionError, match="belongs to user:alice"):
            other.renew_session(session.session_id)
        with pytest.raises(PermissionError, match="belongs to user:alice"):
            other.close_write(session.session_id, 0)
        [refused] = other.close_write_many([(session.session_id, 0, True)])
        assert isinstance(refused, PermissionError)
    alice.renew_session(session.session_id)
    assert alice.close_write(session.session_id, 0).length == 0
    assert ChainClient(cluster.address).stat("/sessions/owned").length == 0


def test_user_tokens_cannot_list_or_repair_chunks(cluster: LocalCluster) -> None:
    """ListChunks and a repair from a good copy are an operator's (root or node); a user may still
    report a suspect copy, which only asks the node to verify it."""
    table = cluster.routing()
    chain = table.chains[0]
    node = {n.node_id: n for n in table.nodes}[chain.targets[0].node_id]
    chunk = storage_pb2.ChunkId(inode=999998, index=0)
    user = auth.issue(secret(cluster), "user", "carol")
    with grpc.insecure_channel(node.address) as channel:
        def call(method: str, request: object, token: str) -> None:
            channel.unary_unary(f"/chainfs.Storage/{method}", lambda m: m.SerializeToString(),
                                lambda b: b)(request, timeout=5, metadata=((auth.METADATA_KEY, f"Bearer {token}"),))
        listing = storage_pb2.ChunkListRequest(chain_id=chain.chain_id, limit=1)
        repair = storage_pb2.RepairChunkRequest(chain_id=chain.chain_id, chunk=chunk)
        for method, request in (("ListChunks", listing), ("RepairChunk", repair)):
            with pytest.raises(grpc.RpcError) as err:
                call(method, request, user)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        call("ListChunks", listing, cluster.root_token or "")
        call("RepairChunk", storage_pb2.RepairChunkRequest(chain_id=chain.chain_id, chunk=chunk, suspect=True), user)
