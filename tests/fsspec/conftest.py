"""Fixtures for the fsspec layer: a ChainFileSystem over the module's real local cluster."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from chainfs.client.fs import ChainFileSystem
from chainfs.cluster import LocalCluster


def make_fs(cluster: LocalCluster, **options) -> ChainFileSystem:
    host, port = cluster.address.rsplit(":", 1)
    return ChainFileSystem(host=host, port=int(port), **options)


@pytest.fixture()
def cfs(cluster: LocalCluster) -> ChainFileSystem:
    return make_fs(cluster)


@pytest.fixture()
def base(cfs: ChainFileSystem) -> Iterator[str]:
    """A fresh directory per test, removed afterwards."""
    path = f"/t-{uuid.uuid4().hex[:10]}"
    cfs.mkdir(path)
    yield path
    cfs.rm(path, recursive=True)
