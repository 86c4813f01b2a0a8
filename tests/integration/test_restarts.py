"""Crash and restart of real processes (SIGKILL): the namespace and the chunks survive."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb
from tests.chunkfiles import chunk_metas

pytestmark = pytest.mark.integration


@pytest.fixture()
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "c", storage_nodes=3, replicas=3, targets_per_node=2,
                      heartbeat_timeout=2.0) as c:
        yield c


def test_metaserver_sigkill_keeps_namespace(own_cluster: LocalCluster) -> None:
    client = ChainClient(own_cluster.address)
    client.mkdir("/keep/a/b", parents=True)
    data = random.Random(1).randbytes(3_000_000)
    before = client.write_file("/keep/a/file", data)
    client.rename("/keep/a/b", "/keep/b")
    listing = sorted(e.name for e in client.ls("/keep"))

    own_cluster.kill_meta()
    own_cluster.restart_meta()
    own_cluster.wait_healthy(30)

    client = ChainClient(own_cluster.address)
    assert sorted(e.name for e in client.ls("/keep")) == listing == ["a", "b"]
    after = client.stat("/keep/a/file")
    assert (after.id, after.length, list(after.layout.chains)) == (before.id, before.length, list(before.layout.chains))
    assert client.read_file("/keep/a/file") == data
    assert client.stat("/keep/b").type == mpb.DIRECTORY
    newer = client.write_file("/keep/new", b"x")
    assert newer.id > before.id, "inode ids must stay monotonic across restarts"


def test_storage_sigkill_restart_keeps_chunks(own_cluster: LocalCluster) -> None:
    client = ChainClient(own_cluster.address)
    client.mkdir("/s", layout=mpb.Layout(chunk_size=256 * 1024, stripe_width=2))
    data = random.Random(2).randbytes(5_000_000)
    client.write_file("/s/f", data)
    metas_before = chunk_metas(client, "/s/f")

    own_cluster.kill_storage(1)
    own_cluster.restart_storage(1)
    own_cluster.wait_healthy(30)

    client = ChainClient(own_cluster.address)
    for replica in range(3):
        assert client.read_file("/s/f", replica=replica) == data
    assert chunk_metas(client, "/s/f") == metas_before
