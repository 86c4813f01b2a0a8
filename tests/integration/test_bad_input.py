"""Bad input at the servers' boundaries: clear statuses, nothing stored, nothing outside data dirs."""

from __future__ import annotations

import errno

import grpc
import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.common import auth
from chainfs.common.checksum import crc32c
from chainfs.common.config import MAX_MESSAGE_BYTES
from chainfs.common.errors import Reason, reason_of, to_exception
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import meta_pb2_grpc as mpb_grpc
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

from tests.grants import capability

pytestmark = pytest.mark.integration

BIG = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def test_oversize_message_is_refused_with_a_clear_status(cluster: LocalCluster) -> None:
    with grpc.insecure_channel(cluster.address, options=BIG) as channel:
        stub = mpb_grpc.NamespaceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Stat(mpb.PathRequest(path="/" + "x" * (MAX_MESSAGE_BYTES + 1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    exc = to_exception(info.value, "/xxx")
    assert isinstance(exc, OSError) and exc.errno == errno.EFBIG


def _head(client: ChainClient) -> tuple[mpb.ChainInfo, spb_grpc.StorageStub]:
    chain = client.routing.refresh().chains[0]
    address = client.routing.node_address(chain.targets[0].node_id)
    return chain, spb_grpc.StorageStub(auth.with_token(grpc.insecure_channel(address), client.routing.token))


@pytest.mark.parametrize("change", [
    dict(chunk_size=3000),                      # not a power of two
    dict(chunk_size=1 << 30),                   # beyond the largest chunk
    dict(offset=4096, length=1, chunk_size=4096),  # past the end of the chunk
    dict(chunk=spb.ChunkId(inode=0, index=0)),  # inode 0 does not exist
    dict(chunk=spb.ChunkId(inode=1, index=1 << 31)),  # index out of range
    dict(replace=True, offset=10),              # a replacing write starts at 0
])
def test_storage_refuses_bad_writes(client: ChainClient, cluster: LocalCluster, change: dict) -> None:
    chain, stub = _head(client)
    data = b"abc"
    header = dict(chain_id=chain.chain_id, chain_version=chain.version, chunk=spb.ChunkId(inode=999_999, index=0),
                  offset=0, length=len(data), replace=False, data_crc=crc32c(data), chunk_size=65536,
                  request_id="bad-input:1")
    header.update(change)
    header["capability"] = capability(cluster, header["chunk"].inode, "w")  # validation runs behind it
    stream = iter([spb.WriteRequest(header=spb.WriteHeader(**header)), spb.WriteRequest(data=data)])
    with pytest.raises(grpc.RpcError) as info:
        stub.Write(stream, timeout=10)
    assert reason_of(info.value) == Reason.INVALID_ARGUMENT, info.value.details()
    for replica in range(len(chain.targets)):
        inode = header["chunk"].inode
        if inode:
            assert client.storage.list_chunks(chain.chain_id, replica, inode) == []


def test_storage_refuses_bad_crc_and_stale_version(client: ChainClient, cluster: LocalCluster) -> None:
    chain, stub = _head(client)
    data = b"payload"
    base = dict(chain_id=chain.chain_id, chunk=spb.ChunkId(inode=888_888, index=0), offset=0,
                length=len(data), replace=True, chunk_size=65536, capability=capability(cluster, 888_888, "w"))
    cases = [
        (dict(chain_version=chain.version, data_crc=crc32c(data) ^ 1, request_id="bad:crc"), Reason.CHECKSUM_MISMATCH),
        (dict(chain_version=chain.version + 1000, data_crc=crc32c(data), request_id="bad:ver"), Reason.STALE_ROUTING),
    ]
    for extra, reason in cases:
        stream = iter([spb.WriteRequest(header=spb.WriteHeader(**base, **extra)), spb.WriteRequest(data=data)])
        with pytest.raises(grpc.RpcError) as info:
            stub.Write(stream, timeout=10)
        assert reason_of(info.value) == reason
    assert client.storage.list_chunks(chain.chain_id, 0, 888_888) == []


def test_storage_read_of_bad_items_gets_invalid_status(client: ChainClient, cluster: LocalCluster) -> None:
    chain, stub = _head(client)
    items = [spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version,
                          chunk=spb.ChunkId(inode=0, index=0), offset=0, length=10),
             spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version,
                          chunk=spb.ChunkId(inode=5, index=0), offset=1 << 30, length=10)]
    request = spb.ReadRequest(items=items, capabilities=[capability(cluster, 0, "r"), capability(cluster, 5, "r")])
    headers = [r.header for r in stub.Read(request, timeout=10) if r.HasField("header")]
    assert [h.status for h in headers] == [spb.INVALID, spb.INVALID]


@pytest.mark.parametrize("method", ["/chainfs.Namespace/Stat", "/chainfs.Namespace/Mkdir",
                                    "/chainfs.Storage/Write", "/chainfs.Storage/Read"])
def test_unparsable_request_bytes_are_invalid_argument(client: ChainClient, cluster: LocalCluster,
                                                       method: str) -> None:
    """Found by the fuzz test: gRPC answered bytes that do not parse with INTERNAL ("Exception
    deserializing request!"); they are the caller's fault (INVALID_ARGUMENT), and a caller
    without a token is still refused as such first."""
    address = cluster.address if "Namespace" in method else client.routing.refresh().nodes[0].address
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, a length no message holds
    with grpc.insecure_channel(address) as channel:
        for token, want in ((client.routing.token, grpc.StatusCode.INVALID_ARGUMENT),
                            (None, grpc.StatusCode.UNAUTHENTICATED)):
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            with pytest.raises(grpc.RpcError) as info:
                if method.endswith("Write"):
                    channel.stream_unary(method)(iter([garbage]), timeout=10, metadata=metadata)
                elif method.endswith("Read"):
                    list(channel.unary_stream(method)(garbage, timeout=10, metadata=metadata))
                else:
                    channel.unary_unary(method)(garbage, timeout=10, metadata=metadata)
            assert info.value.code() == want, (method, info.value.details())
            if want == grpc.StatusCode.INVALID_ARGUMENT:
                assert "malformed" in info.value.details()
    assert client.stat("/").type == mpb.DIRECTORY  # and the server carries on
