"""Block keys and the block file format."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from chainfs.kvcache import CorruptBlock, KVNamespace, block_keys
from chainfs.kvcache import blockformat


def test_keys_are_chained_full_blocks_only(ns: KVNamespace) -> None:
    toks = list(range(20))
    keys = block_keys(ns, toks)
    assert len(keys) == 20 // ns.block_tokens
    assert block_keys(ns, toks[:16]) == keys[:2]
    changed = block_keys(ns, [99] + toks[1:])
    assert all(a != b for a, b in zip(keys, changed)), "a change in block 0 must change every later key"


def test_namespace_separates_models_layouts_and_block_sizes(ns: KVNamespace) -> None:
    toks = list(range(64))
    others = [KVNamespace("other", ns.dtype, ns.layout, ns.block_tokens),
              KVNamespace(ns.model, "float16", ns.layout, ns.block_tokens),
              KVNamespace(ns.model, ns.dtype, "L9.KV.H2.T.D4", ns.block_tokens)]
    for other in others:
        assert block_keys(other, toks)[0] != block_keys(ns, toks)[0]
        assert other.dirname != ns.dirname


def test_keys_are_stable_across_processes(ns: KVNamespace) -> None:
    code = ("from chainfs.kvcache import KVNamespace, block_keys;"
            f"print(block_keys(KVNamespace({ns.model!r}, {ns.dtype!r}, {ns.layout!r}, {ns.block_tokens}),"
            " list(range(16)))[1].hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == block_keys(ns, list(range(16)))[1].hex()


def test_block_roundtrip_and_rejections() -> None:
    kv = np.arange(2 * 2 * 2 * 8 * 4, dtype=np.float32).reshape(2, 2, 2, 8, 4)
    key = bytes(range(16))
    blob = blockformat.encode(key, kv, 8)
    assert len(blob) == blockformat.HEADER_SIZE + kv.nbytes
    np.testing.assert_array_equal(blockformat.decode(blob, key), kv)
    header = blockformat.decode_header(blob[:blockformat.HEADER_SIZE], key)
    assert header.shape == kv.shape and header.tokens == 8 and header.total_size == len(blob)

    flipped = bytearray(blob)
    flipped[-5] ^= 0x40
    bad = {"payload bit flip": bytes(flipped), "truncated": blob[:-4], "header only": blob[:blockformat.HEADER_SIZE],
           "empty": b"", "garbage": b"x" * len(blob)}
    for name, data in bad.items():
        with pytest.raises(CorruptBlock):
            blockformat.decode(data, key)
    with pytest.raises(CorruptBlock):
        blockformat.decode(blob, bytes(16))  # right bytes, wrong path


def test_the_old_name_namespace_still_imports_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="KVNamespace"):
        from chainfs.kvcache import Namespace
    assert Namespace is KVNamespace
