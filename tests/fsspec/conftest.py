"""Fixtures for the fsspec layer: a ChainFileSystem over the module's real local cluster."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster
from tests.fsspec.mounting import mount_at, unmount


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


@pytest.fixture(scope="module")
def mounted(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's cluster mounted by `chainfs mount` (its own process), removed by `chainfs umount`."""
    mnt = tmp_path_factory.mktemp("mnt")
    mount_at(cluster.url, mnt)
    try:
        yield mnt
    finally:
        unmount(mnt)
