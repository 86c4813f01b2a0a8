"""Shared fixtures: a real local cluster (separate processes on loopback) and a client of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node, 3-replica cluster with 4 targets per node (4 chains), shared by one test module."""
    root: Path = tmp_path_factory.mktemp("cluster")
    with LocalCluster(root, storage_nodes=3, replicas=3, targets_per_node=4, heartbeat_timeout=5.0) as c:
        yield c


@pytest.fixture()
def client(cluster: LocalCluster) -> ChainClient:
    return ChainClient(cluster.address, retry_deadline=30.0)


@pytest.fixture()
def rng_bytes():
    def make(n: int, seed: int = 0) -> bytes:
        return os.urandom(n) if seed == 0 else __import__("random").Random(seed).randbytes(n)
    return make
