"""Bounded CloseWrite lengths and request ids, against a real metaserver and storage processes.

A lost reply is simulated for real: a client-side interceptor lets the call reach the metaserver,
which applies it and answers, then drops that answer and reports UNAVAILABLE, as a connection cut
after the server's reply would. The client's retry then travels with the same request id.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc
import pytest

from chainfs.client import ChainClient
from chainfs.client.rpc.meta_client import CHANNELS, MetaClient
from chainfs.client.rpc.placement import chain_of
from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import meta_pb2_grpc as mpb_grpc

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024


class LostReply(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a client sees when the connection drops after the server answered."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection lost before the reply arrived (test)"

    def trailing_metadata(self) -> tuple:
        return ()

    def initial_metadata(self) -> tuple:
        return ()


class DropFirstReply(grpc.UnaryUnaryClientInterceptor):
    """Drops the first successful reply of each named method, after the server applied the call."""

    def __init__(self, methods: set[str]) -> None:
        self.methods = methods
        self.dropped: list[str] = []

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        name = details.method.rsplit("/", 1)[-1]
        if name in self.methods and name not in self.dropped and outcome.exception() is None:
            self.dropped.append(name)
            raise LostReply()
        return outcome


class LossyMetaClient(MetaClient):
    def __init__(self, address: str, interceptor: DropFirstReply, send_ids: bool = True) -> None:
        super().__init__(address, timeout=10.0, retry_deadline=10.0)
        self.channel = grpc.intercept_channel(CHANNELS.get(address), interceptor)
        self.send_ids = send_ids

    @property
    def _ns(self) -> mpb_grpc.NamespaceStub:
        return mpb_grpc.NamespaceStub(self.channel)

    def request_id(self) -> str:
        return super().request_id() if self.send_ids else ""


def _layout() -> mpb.Layout:
    return mpb.Layout(chunk_size=CHUNK, stripe_width=2)


def test_retried_mutations_after_a_lost_reply_get_the_first_answer(client: ChainClient, cluster: LocalCluster) -> None:
    client.mkdir("/lost", parents=True, layout=_layout())
    client.write_file("/lost/a", b"renamed once")
    client.write_file("/lost/gone", b"removed once")
    interceptor = DropFirstReply({"Rename", "Remove", "Mkdir", "Create", "OpenWrite"})
    meta = LossyMetaClient(cluster.address, interceptor)

    meta.rename("/lost/a", "/lost/b")  # applied, reply dropped, retried: the first answer, not ENOENT
    meta.remove("/lost/gone")
    made = meta.mkdir("/lost/dir")  # a retry would otherwise be EEXIST
    created = meta.create("/lost/new", exclusive=True)
    session = meta.open_write("/lost/b", mpb.APPEND, "c1")  # a second session would hold the file: BUSY
    assert sorted(interceptor.dropped) == ["Create", "Mkdir", "OpenWrite", "Remove", "Rename"]

    assert client.read_file("/lost/b") == b"renamed once"
    with pytest.raises(FileNotFoundError):
        client.stat("/lost/a")
    with pytest.raises(FileNotFoundError):
        client.stat("/lost/gone")
    assert client.stat("/lost/dir").id == made.id and client.stat("/lost/new").id == created.id
    impatient = MetaClient(cluster.address, timeout=5.0, retry_deadline=0.3)
    with pytest.raises(ConnectionError):  # BUSY: the first open's session holds the file, and only it
        impatient.open_write("/lost/b", mpb.APPEND, "c2")
    client.meta.close_write(session.session_id, len(b"renamed once"), commit=True, path="/lost/b")
    impatient.close_write(impatient.open_write("/lost/b", mpb.APPEND, "c2").session_id, 12, commit=False)


def test_without_request_ids_the_retried_rename_fails(client: ChainClient, cluster: LocalCluster) -> None:
    """The same lost reply without a request id: the retry runs again and finds no source."""
    client.mkdir("/noid", parents=True, layout=_layout())
    client.write_file("/noid/a", b"x")
    meta = LossyMetaClient(cluster.address, DropFirstReply({"Rename"}), send_ids=False)
    with pytest.raises(FileNotFoundError):
        meta.rename("/noid/a", "/noid/b")
    assert client.read_file("/noid/b") == b"x"  # it was applied, once


def test_close_write_lengths_are_checked_against_the_chunks(client: ChainClient) -> None:
    client.mkdir("/len", parents=True, layout=_layout())
    data = bytes(range(256)) * 40  # 10240 bytes: one partial chunk
    session = client.meta.open_write("/len/f", mpb.REPLACE, "c1")
    inode = session.inode
    client.storage.write_chunk(chain_of(inode.layout, 0), inode.id, 0, data, CHUNK, 0, True)
    hostile = [2**64 - 1, 2**50 + 1, len(data) + 1, len(data) - 1, 3 * CHUNK, CHUNK]
    for length in hostile:
        with pytest.raises(ValueError, match="length"):
            client.meta.close_write(session.session_id, length, commit=True, path="/len/f")
    with pytest.raises(FileNotFoundError):
        client.stat("/len/f")  # nothing was published by the refusals
    done = client.meta.close_write(session.session_id, len(data), commit=True, path="/len/f")
    assert done.length == len(data) and client.read_file("/len/f") == data
    assert [e.inode.length for e in client.ls("/len")] == [len(data)]
    with pytest.raises(ValueError, match="maximum file size"):  # SetAttr (truncate) is bounded too
        client.meta.set_attr("/len/f", length=2**64 - 1)
    assert client.stat("/len/f").length == len(data)

    # An append must end where its chunks end, too; a grown length with nothing written is refused.
    append = client.meta.open_write("/len/f", mpb.APPEND, "c1")
    with pytest.raises(ValueError, match="length"):
        client.meta.close_write(append.session_id, len(data) + 5, commit=True, path="/len/f")
    assert client.meta.close_write(append.session_id, len(data), commit=True, path="/len/f").length == len(data)
    with client.open_writer("/len/f", mpb.APPEND) as writer:
        writer.write(b"tail" * 20000)  # crosses into the next chunk on the other chain
    assert client.read_file("/len/f") == data + b"tail" * 20000


def test_batched_closes_check_each_file(client: ChainClient) -> None:
    """In one CloseWriteMany, a file whose length its chunks do not back is refused alone."""
    client.mkdir("/lenmany", parents=True, layout=_layout())
    files = {f"/lenmany/{i}": bytes([i]) * (1000 + 70_000 * (i % 3)) for i in range(12)}
    assert all(isinstance(r, mpb.Inode) for r in client.write_files(files))  # the real batched writer
    assert {p: client.read_file(p) for p in files} == files
    sessions = client.meta.open_write_many(["/lenmany/good", "/lenmany/bad"], mpb.REPLACE, "c1")
    for session in sessions:
        inode = session.inode
        client.storage.write_chunk(chain_of(inode.layout, 0), inode.id, 0, b"z" * 500, CHUNK, 0, True)
    good, bad = client.meta.close_write_many([(sessions[0].session_id, 500, True), (sessions[1].session_id, 501, True)],
                                             ["/lenmany/good", "/lenmany/bad"])
    assert isinstance(good, mpb.Inode) and good.length == 500
    assert isinstance(bad, ValueError) and "length 501" in str(bad)
    with pytest.raises(FileNotFoundError):
        client.stat("/lenmany/bad")
    assert client.meta.close_write(sessions[1].session_id, 500, commit=True).length == 500  # it stayed open
