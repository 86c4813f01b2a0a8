"""Shared fixtures: a real local cluster (separate processes on loopback) and a client of it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.common import auth, tls
from chainfs.cluster.etcd import EtcdCluster, etcd_binary
from chainfs.metaserver.store import MetaStore, Store


@pytest.fixture(scope="module", autouse=True)
def _per_address_settings_stay_in_their_module() -> Iterator[None]:
    """Clients remember per address which token and TLS config to use (common/addresses.PerAddress),
    for the process's life. A later module's server that reuses a freed port must not inherit a
    TLS or token choice from an earlier module's cluster, so each module leaves them as it found them."""
    saved = [(reg, dict(reg._by_address), reg.default) for reg in (auth._TOKENS, tls._CONFIGS)]
    yield
    for reg, by_address, default in saved:
        with reg._lock:
            reg._by_address.clear()
            reg._by_address.update(by_address)
            reg.default = default


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


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real single-member etcd for the session; each test takes its own key prefix."""
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (scripts/install_sysdeps.sh installs etcd-server)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1, die_with_parent=True) as cluster:
        yield cluster


@pytest.fixture(params=["rocksdb", "etcd"])
def meta_backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once per metadata backend."""
    return request.param


@pytest.fixture
def open_store(meta_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    """`open_store(name="meta")` opens (or reopens) a store of this test's backend; all are closed after."""
    opened: list[Store] = []
    prefix = f"/t-{uuid.uuid4().hex[:12]}"

    def make(name: str = "meta") -> Store:
        if meta_backend == "rocksdb":
            store: Store = MetaStore(tmp_path / name)
        else:
            from chainfs.metaserver.etcd_store import EtcdStore

            cluster: EtcdCluster = request.getfixturevalue("etcd")
            store = EtcdStore(cluster.endpoints, prefix=f"{prefix}-{name}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
