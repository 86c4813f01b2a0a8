"""CRC32C of chunk data: computed by the client, checked by every replica and by the reader.

Besides one CRC over a whole chunk, every replica keeps the CRC of each BLOCK_BYTES block, so that
a read of any range can be verified by reading only the blocks that cover it.
"""

from __future__ import annotations

from typing import Sequence

import crc32c as _crc32c

BLOCK_BYTES = 64 * 1024


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    return _crc32c.crc32c(data, value)


def block_crcs(data: bytes | bytearray | memoryview) -> list[int]:
    view = memoryview(data).cast("B")
    return [_crc32c.crc32c(view[at:at + BLOCK_BYTES]) for at in range(0, len(view), BLOCK_BYTES)]


def covering_blocks(start: int, length: int, chunk_length: int) -> tuple[int, int]:
    """The byte range [lo, hi) of whole blocks that covers [start, start+length) of a chunk."""
    lo = start - start % BLOCK_BYTES
    hi = min(chunk_length, -(-(start + length) // BLOCK_BYTES) * BLOCK_BYTES)
    return lo, max(lo, hi)


def blocks_match(view: memoryview, lo: int, crcs: Sequence[int]) -> bool:
    """Whether `view`, the chunk's bytes from block-aligned offset `lo`, matches its block CRCs."""
    first = lo // BLOCK_BYTES
    for k, at in enumerate(range(0, len(view), BLOCK_BYTES)):
        if first + k >= len(crcs) or _crc32c.crc32c(view[at:at + BLOCK_BYTES]) != crcs[first + k]:
            return False
    return True
