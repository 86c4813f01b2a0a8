"""Where bytes of a file live: chunk ranges and chains, computed by the client from the layout."""

from __future__ import annotations

from dataclasses import dataclass

from chainfs.proto import meta_pb2 as pb


@dataclass(frozen=True)
class ChunkRange:
    index: int        # chunk index in the file
    offset: int       # offset inside the chunk
    length: int       # bytes in this chunk
    file_offset: int  # where these bytes start in the file


def chunk_ranges(offset: int, length: int, chunk_size: int) -> list[ChunkRange]:
    """Splits the file range [offset, offset+length) at chunk boundaries."""
    if offset < 0 or length < 0:
        raise ValueError(f"negative offset or length: {offset}, {length}")
    ranges = []
    pos, end = offset, offset + length
    while pos < end:
        index, inner = divmod(pos, chunk_size)
        take = min(chunk_size - inner, end - pos)
        ranges.append(ChunkRange(index, inner, take, pos))
        pos += take
    return ranges


def chain_of(layout: pb.Layout, index: int) -> int:
    if not layout.chains:
        raise ValueError("the file's layout has no chains")
    return layout.chains[index % len(layout.chains)]


def chunk_count(length: int, chunk_size: int) -> int:
    """How many chunks a file of `length` bytes has (the last may be short)."""
    return -(-length // chunk_size)
