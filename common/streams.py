"""Cutting chunk bytes into stream messages, the one way both clients and forwarding nodes do it."""

from __future__ import annotations

from typing import Iterator

from chainfs.common.config import STREAM_MESSAGE_BYTES
from chainfs.proto import storage_pb2


def pieces(data: bytes | bytearray | memoryview, step: int = STREAM_MESSAGE_BYTES) -> Iterator[bytes]:
    """The bytes in messages of at most `step`; a bytes object that fits one goes without a copy."""
    if isinstance(data, bytes) and 0 < len(data) <= step:
        yield data
        return
    view = memoryview(data)
    for at in range(0, len(view), step):
        yield bytes(view[at:at + step])


def write_requests(header: storage_pb2.WriteHeader, data: bytes | bytearray | memoryview,
                   step: int = STREAM_MESSAGE_BYTES) -> Iterator[storage_pb2.WriteRequest]:
    """A Write stream: the header, then the data."""
    yield storage_pb2.WriteRequest(header=header)
    for piece in pieces(data, step):
        yield storage_pb2.WriteRequest(data=piece)
