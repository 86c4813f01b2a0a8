"""The on-disk form of one KV block: a small fixed header, then the raw tensor bytes.

Why a header: a reader must reject anything that is not a whole, uncorrupted block of the
expected key before it reaches attention. The header names the block's key (so a file copied to
the wrong path is caught), dtype, shape, token count and payload length, and a CRC32C that covers
the header fields and the payload together.

Layout (little-endian):
    magic "CKVB" | version u16 | dtype code u8 | ndim u8 | tokens u32 | payload length u64 |
    key 16 B | shape u32 x MAX_DIMS | crc32c u32
"""

from __future__ import annotations

import math
import struct

import numpy as np

from chainfs.common.checksum import crc32c

MAGIC = b"CKVB"
VERSION = 1
MAX_DIMS = 6
_FIXED = struct.Struct(f"<4sHBBIQ16s{MAX_DIMS}I")
_CRC = struct.Struct("<I")
HEADER_SIZE = _FIXED.size + _CRC.size

# Code 4 holds raw 16-bit words: bfloat16 KV (numpy has no bfloat16) travels viewed as int16; the
# namespace's dtype says what the words mean.
DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("<f8"), 4: np.dtype("<i2")}
_CODES = {dt: code for code, dt in DTYPES.items()}


class CorruptBlock(ValueError):
    """The bytes are not a valid block of the expected key: treat as a miss, never use."""


class BlockHeader:
    __slots__ = ("dtype", "shape", "tokens", "payload_len", "key", "crc")

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...], tokens: int, payload_len: int,
                 key: bytes, crc: int) -> None:
        self.dtype, self.shape, self.tokens = dtype, shape, tokens
        self.payload_len, self.key, self.crc = payload_len, key, crc

    @property
    def total_size(self) -> int:
        return HEADER_SIZE + self.payload_len


def encode(key: bytes, kv: np.ndarray, tokens: int) -> bytes:
    """One block file's bytes."""
    out = bytearray(encoded_size(kv))
    encode_into(memoryview(out), key, kv, tokens)
    return bytes(out)


def encoded_size(kv: np.ndarray) -> int:
    return HEADER_SIZE + kv.nbytes


def encode_into(out: memoryview, key: bytes, kv: np.ndarray, tokens: int) -> None:
    """Writes one block's bytes into `out` (`encoded_size(kv)` bytes, e.g. its place in a segment):
    the tensor is copied once, straight into place."""
    dtype = np.dtype(kv.dtype).newbyteorder("<")
    if dtype not in _CODES:
        raise ValueError(f"unsupported KV dtype {kv.dtype}")
    if kv.ndim > MAX_DIMS or len(key) != 16:
        raise ValueError("KV block must have at most 6 dims and a 16-byte key")
    payload = out[HEADER_SIZE:HEADER_SIZE + kv.nbytes]
    np.copyto(np.frombuffer(payload, dtype=dtype).reshape(kv.shape), kv, casting="no" if kv.dtype == dtype else "equiv")
    shape = tuple(kv.shape) + (0,) * (MAX_DIMS - kv.ndim)
    _FIXED.pack_into(out, 0, MAGIC, VERSION, _CODES[dtype], kv.ndim, tokens, kv.nbytes, key, *shape)
    _CRC.pack_into(out, _FIXED.size, crc32c(payload, crc32c(out[:_FIXED.size])))


def decode_header(data: bytes, key: bytes | None = None) -> BlockHeader:
    """Parses and sanity-checks the header (not the payload checksum)."""
    if len(data) < HEADER_SIZE:
        raise CorruptBlock(f"block shorter than its header ({len(data)} bytes)")
    magic, version, code, ndim, tokens, plen, bkey, *shape = _FIXED.unpack_from(data)
    (crc,) = _CRC.unpack_from(data, _FIXED.size)
    if magic != MAGIC:
        raise CorruptBlock("bad magic")
    if version != VERSION:
        raise CorruptBlock(f"unknown block format version {version}")
    if code not in DTYPES or not 0 < ndim <= MAX_DIMS:
        raise CorruptBlock("bad dtype or rank")
    if key is not None and bkey != key:
        raise CorruptBlock("block key does not match its path")
    dims = tuple(shape[:ndim])
    if math.prod(dims) * DTYPES[code].itemsize != plen:
        raise CorruptBlock("shape and payload length disagree")
    return BlockHeader(DTYPES[code], dims, tokens, plen, bkey, crc)


def decode(data: bytes | bytearray | memoryview, key: bytes | None = None, copy: bool = True) -> np.ndarray:
    """The block's tensor, or CorruptBlock if anything about it is off (truncation included).

    `copy=False` (for a writable buffer the caller hands over, e.g. a fresh read buffer) returns a
    view of `data` itself where the byte order allows: a 32 MiB load then costs no second copy."""
    header = decode_header(data, key)
    if len(data) != header.total_size:
        raise CorruptBlock(f"block is {len(data)} bytes, header says {header.total_size}")
    payload = memoryview(data)[HEADER_SIZE:]
    if crc32c(payload, crc32c(memoryview(data)[:_FIXED.size])) != header.crc:
        raise CorruptBlock("checksum mismatch")
    arr = np.frombuffer(data, dtype=header.dtype, offset=HEADER_SIZE).reshape(header.shape)
    return arr.astype(arr.dtype.newbyteorder("="), copy=copy)
