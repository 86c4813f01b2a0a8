"""Fixtures for the KV block store tests: filesystems to run them over and deterministic blocks."""

from __future__ import annotations

import uuid
from typing import Iterator

import fsspec
import numpy as np
import pytest

from chainfs.kvcache import KVBlockStore, Namespace

B = 8
SHAPE = (2, 2, 2, B, 4)  # (layers, K/V, kv heads, tokens, head_dim)


@pytest.fixture()
def ns() -> Namespace:
    return Namespace(model="test-model", dtype="float32", layout="L2.KV.H2.T.D4", block_tokens=B)


@pytest.fixture(params=["file", "memory"])
def fs_root(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    if request.param == "file":
        yield fsspec.filesystem("file"), str(tmp_path / "kv")
    else:
        root = f"/kvtest-{uuid.uuid4().hex}"
        fs = fsspec.filesystem("memory")
        yield fs, root
        if fs.exists(root):
            fs.rm(root, recursive=True)


def block_for(key_seed: int) -> np.ndarray:
    """A block whose content is a function of one integer, so readers can verify what they got."""
    return np.random.default_rng(key_seed).standard_normal(SHAPE).astype(np.float32)


def tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n)


def open_store(fs: fsspec.AbstractFileSystem, root: str, ns: Namespace, **kw) -> KVBlockStore:
    return KVBlockStore(fs, root, ns, **kw)
