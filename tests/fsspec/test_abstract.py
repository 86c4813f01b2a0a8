"""fsspec's own abstract test suite (copy, get, put, pipe, open, mv) against a real local cluster."""

from __future__ import annotations

import uuid
from typing import Iterator

import fsspec.tests.abstract as abstract
import pytest

from chainfs.client.fsspec.fs import ChainFileSystem

pytestmark = pytest.mark.integration


class ChainFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self, cfs: ChainFileSystem) -> ChainFileSystem:
        return cfs

    @pytest.fixture
    def fs_join(self):
        return lambda *parts: "/".join(p.rstrip("/") for p in parts[:-1]) + "/" + parts[-1]

    @pytest.fixture
    def fs_path(self, fs: ChainFileSystem) -> Iterator[str]:
        # No glob characters: the suite globs under this path.
        path = f"/abstract-{uuid.uuid4().hex[:12]}"
        yield path
        if fs.exists(path):
            fs.rm(path, recursive=True)

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return True


class TestChainCopy(abstract.AbstractCopyTests, ChainFixtures):
    pass


class TestChainGet(abstract.AbstractGetTests, ChainFixtures):
    pass


class TestChainPut(abstract.AbstractPutTests, ChainFixtures):
    pass


class TestChainPipe(abstract.AbstractPipeTests, ChainFixtures):
    pass


class TestChainOpen(abstract.AbstractOpenTests, ChainFixtures):
    pass
