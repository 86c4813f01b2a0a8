"""Chunk ids and the range rules every write passes, validated before any file name is built."""

from __future__ import annotations

import struct
from typing import NamedTuple

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import storage_pb2

MAX_INODE = (1 << 64) - 1
MAX_INDEX = (1 << 31) - 1
MAX_VERSION = (1 << 63) - 1


class ChunkKey(NamedTuple):
    """A chunk's id: (inode, index). Construct through `chunk_key` to validate."""

    inode: int
    index: int

    def encode(self) -> bytes:
        return struct.pack(">QI", self.inode, self.index)

    @classmethod
    def decode(cls, raw: bytes) -> "ChunkKey":
        inode, index = struct.unpack(">QI", raw)
        return cls(inode, index)

    def to_proto(self) -> storage_pb2.ChunkId:
        return storage_pb2.ChunkId(inode=self.inode, index=self.index)


def chunk_key(inode: int, index: int) -> ChunkKey:
    """Validates a chunk id: inode > 0 (u64), 0 <= index < 2**31."""
    if not isinstance(inode, int) or not isinstance(index, int):
        raise ChainfsError(Reason.INVALID_ARGUMENT, "chunk ids must be integers")
    if not 0 < inode <= MAX_INODE:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"invalid inode {inode}")
    if not 0 <= index <= MAX_INDEX:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"invalid chunk index {index}")
    return ChunkKey(inode, index)


def key_of(chunk: storage_pb2.ChunkId) -> ChunkKey:
    return chunk_key(chunk.inode, chunk.index)


def validate_chunk_size(chunk_size: int) -> None:
    if not config.is_power_of_two(chunk_size) or chunk_size > config.MAX_CHUNK_SIZE:
        raise ChainfsError(
            Reason.INVALID_ARGUMENT,
            f"chunk size {chunk_size} is not a power of two <= {config.MAX_CHUNK_SIZE}",
        )


def validate_write(chunk_size: int, offset: int, length: int, replace: bool) -> None:
    """The range checks every write passes before any byte is stored."""
    validate_chunk_size(chunk_size)
    if offset < 0 or length < 0 or offset + length > chunk_size:
        raise ChainfsError(
            Reason.INVALID_ARGUMENT,
            f"range [{offset}, {offset + length}) does not fit chunk size {chunk_size}",
        )
    if replace and offset != 0:
        raise ChainfsError(Reason.INVALID_ARGUMENT, "a replacing write must start at offset 0")
