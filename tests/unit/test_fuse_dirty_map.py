"""The mount's map of unwritten ranges: merging, chunk boundaries, reads laid over stored bytes."""

from __future__ import annotations

import random

from chainfs.client.mount.fuse_files import DirtyMap


def test_overlapping_and_adjacent_writes_merge_and_the_last_wins() -> None:
    d = DirtyMap(chunk_size=16)
    d.put(2, b"aaaa")
    d.put(6, b"bb")          # adjacent: one extent
    d.put(4, b"X")           # inside: overwrites
    assert d.chunks == {0: [(2, bytearray(b"aaXabb"))]} and d.bytes == 6
    d.put(14, b"crossing")   # splits at the chunk boundary
    assert d.chunks[0][-1] == (14, bytearray(b"cr")) and d.chunks[1] == [(0, bytearray(b"ossing"))]
    assert d.full() == []
    d.put(0, bytes(16))
    assert d.full() == [0] and d.bytes == 16 + 6


def test_overlay_matches_a_plain_buffer() -> None:
    rng = random.Random(7)
    d, model = DirtyMap(chunk_size=64), bytearray(300)
    for _ in range(200):
        offset, n = rng.randrange(280), rng.randrange(1, 20)
        data = rng.randbytes(n)
        d.put(offset, data)
        model[offset:offset + n] = data
    out = bytearray(300)
    d.overlay(0, out)
    written = {i for ext in d.chunks.items() for s, b in ext[1] for i in range(ext[0] * 64 + s, ext[0] * 64 + s + len(b))}
    assert all(out[i] == model[i] for i in written)
    part = bytearray(50)
    d.overlay(100, part)
    assert all(part[i - 100] == model[i] for i in written if 100 <= i < 150)
    popped = d.pop(1)
    assert popped and 1 not in d.chunks and d.bytes == sum(len(b) for ext in d.chunks.values() for _, b in ext)
