"""Fixtures for the KV block store tests: filesystems to run them over and deterministic blocks."""

from __future__ import annotations

import uuid
from typing import Iterator

import fsspec
import pytest

from chainfs.kvcache import KVNamespace

from kvblocks import B


@pytest.fixture()
def ns() -> KVNamespace:
    return KVNamespace(model="test-model", dtype="float32", layout="L2.KV.H2.T.D4", block_tokens=B)


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
