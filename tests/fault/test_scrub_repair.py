"""Bad replicas found and repaired (issue 12): `fsck --verify-data` names each bad replica and exits
1, `--repair` mends them (exit 0, the replica's bytes equal its peers'); a background scrub pass
repairs rot by itself; a returning target whose predecessor's copy is rotten finishes resync with
good bytes; an append onto a rotten chunk repairs it instead of failing."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.common.scrape import scrape
from chainfs.proto import meta_pb2 as mpb

from tests import chunkfiles
from tests.chunkfiles import replica_file
from tests.fault.harness import CHUNK, WAIT, Load, client, make_cluster, node_index, the_chain, wait_state

pytestmark = pytest.mark.fault

BAD_AT = 1000  # inside a chunk's first block, away from its last byte (which plain fsck probes)


def rot(path: Path) -> None:
    chunkfiles.rot(path, BAD_AT)


def fsck_cli(url: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chainfs.cli.main", "fsck", url, *flags],
                          capture_output=True, text=True, timeout=120)


def replicas_agree(chain: mpb.ChainInfo, inode: mpb.Inode, index: int, data: bytes) -> bool:
    want = data[index * CHUNK:(index + 1) * CHUNK]
    try:
        return all(replica_file(chain, inode, index, r).read_bytes() == want for r in range(len(chain.targets)))
    except (OSError, ValueError):
        return False


def assert_healed(cluster: LocalCluster, c: ChainClient, path: str, data: bytes) -> None:
    """Every replica's copy of every chunk of `path` equals its peers', reads back from every
    replica, and fsck --verify-data finds nothing."""
    chain, inode = the_chain(cluster), c.stat(path)
    for index in range(-(-len(data) // CHUNK)):
        assert replicas_agree(chain, inode, index, data), f"chunk {index} differs between replicas"
    for replica in range(len(chain.targets)):
        assert c.read_file(path, replica=replica) == data
    done = fsck_cli(cluster.url, "--verify-data")
    assert done.returncode == 0, done.stdout + done.stderr


def test_fsck_verify_data_names_bad_replicas_and_repair_mends_them(tmp_path: Path) -> None:
    with make_cluster(tmp_path / "c", scrub_mib_s=0) as cluster:
        c = client(cluster)
        c.mkdir("/v", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        data = random.Random(1).randbytes(3 * CHUNK + 77)
        inode = c.write_file("/v/f", data)
        chain = the_chain(cluster)
        rot(replica_file(chain, inode, 0, 1))                  # bit rot in the middle replica
        with open(replica_file(chain, inode, 1, 2), "r+b") as f:  # the tail's chunk 1 truncated
            f.truncate(BAD_AT)
        replica_file(chain, inode, 2, 0).unlink()              # the head's chunk 2 deleted
        bad = {(0, 1), (1, 2), (2, 0)}  # (chunk index, replica)

        done = fsck_cli(cluster.url, "--verify-data")
        assert done.returncode == 1, done.stdout + done.stderr
        for index, replica in bad:
            t = chain.targets[replica]
            assert (f"chain {chain.chain_id} chunk {inode.id}:{index}: target {t.target_id} on node {t.node_id} "
                    "cannot serve it") in done.stdout, done.stdout
        assert done.stdout.count("cannot serve it") == len(bad), done.stdout

        done = fsck_cli(cluster.url, "--repair")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count(": repaired") == len(bad), done.stdout
        assert_healed(cluster, c, "/v/f", data)


def test_scrub_repairs_rot_by_itself(tmp_path: Path) -> None:
    with make_cluster(tmp_path / "c", scrub_mib_s=512, scrub_interval=0.5) as cluster:
        c = client(cluster)
        c.mkdir("/s", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        data = random.Random(2).randbytes(2 * CHUNK)
        inode = c.write_file("/s/f", data)
        chain = the_chain(cluster)
        victim = chain.targets[2]
        rot(replica_file(chain, inode, 1, 2))
        wait_for(lambda: replicas_agree(chain, inode, 1, data), WAIT, "the scrub to repair the tail's chunk 1",
                 interval=0.2)
        node = next(n for n in cluster.routing().nodes if n.node_id == victim.node_id)
        samples = scrape(node.metrics_address)
        assert samples.total("chainfs_chunk_repairs_total", cause="scrub", result="ok") >= 1
        assert samples.total("chainfs_scrub_bad_chunks_total", target=str(victim.target_id)) >= 1
        assert samples.total("chainfs_scrub_passes_total") >= 1
        assert_healed(cluster, c, "/s/f", data)


def test_a_bad_read_is_reported_and_the_copy_repaired(tmp_path: Path) -> None:
    """A whole chunk goes out by sendfile unchecked by its node; the client that finds it bad
    reads another replica and reports the copy, which the node repairs long before a scrub pass."""
    with make_cluster(tmp_path / "c", scrub_mib_s=512, scrub_interval=3600) as cluster:
        c = ChainClient(cluster.address, short_circuit=False, retry_deadline=30.0)
        c.mkdir("/b", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        data = random.Random(5).randbytes(CHUNK)
        inode = c.write_file("/b/f", data)
        chain = the_chain(cluster)
        rot(replica_file(chain, inode, 0, 0))  # chunk 0 is read from replica 0 first
        assert c.read_file("/b/f") == data
        wait_for(lambda: replicas_agree(chain, inode, 0, data), WAIT, "the reported copy to be repaired",
                 interval=0.2)
        node = next(n for n in cluster.routing().nodes if n.node_id == chain.targets[0].node_id)
        assert scrape(node.metrics_address).total("chainfs_chunk_repairs_total", cause="read", result="ok") == 1
        assert c.read_file("/b/f", replica=0) == data


def test_resync_from_a_rotten_predecessor_finishes_with_good_bytes(tmp_path: Path) -> None:
    """The tail misses an overwrite; then its predecessor's copy of the new chunk rots. When the
    tail returns, its predecessor repairs its own copy from the head before sending it."""
    with make_cluster(tmp_path / "c", scrub_mib_s=0) as cluster:
        c = client(cluster)
        c.mkdir("/r", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        c.write_file("/r/f", b"old" * 1000)
        returning = the_chain(cluster).targets[2]
        index = node_index(cluster, returning.node_id)
        cluster.kill_storage(index)
        wait_state(cluster, returning.node_id, mpb.OFFLINE)
        data = random.Random(3).randbytes(CHUNK + 500)
        inode = c.write_file("/r/f", data)
        chain = the_chain(cluster)
        serving = [t for t in chain.targets if t.state == mpb.SERVING]
        assert len(serving) == 2
        predecessor = serving[-1]  # the returning target syncs from the last serving one
        position = [t.target_id for t in chain.targets].index(predecessor.target_id)
        rot(replica_file(chain, inode, 0, position))

        cluster.restart_storage(index)
        wait_state(cluster, returning.node_id, mpb.SERVING)
        cluster.wait_healthy(WAIT)
        assert_healed(cluster, c, "/r/f", data)


def test_append_onto_a_rotten_chunk_repairs_it(tmp_path: Path) -> None:
    with make_cluster(tmp_path / "c", scrub_mib_s=0) as cluster:
        c = client(cluster)
        c.mkdir("/a", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        first = random.Random(4).randbytes(CHUNK // 2)
        inode = c.write_file("/a/f", first)
        chain = the_chain(cluster)
        rot(replica_file(chain, inode, 0, 0))  # the head's copy, which an append patches
        more = b"appended" * 100
        c.write_file("/a/f", more, mode=mpb.APPEND)
        assert_healed(cluster, c, "/a/f", first + more)


def test_a_busy_scrub_under_load_changes_nothing(tmp_path: Path) -> None:
    """Scrub passes back to back beside writers, overwriters and readers of registers: nothing
    is found bad or repaired (nothing rotted), every acknowledged write reads back, the history is
    linearizable, and fsck --verify-data is clean."""
    with make_cluster(tmp_path / "c", scrub_mib_s=1024, scrub_interval=0.05) as cluster:
        load = Load(cluster).start()
        try:
            load.wait_acked(20)
        finally:
            load.stop()
        load.check_acked(replicas=3)
        load.check_linearizable()
        done = fsck_cli(cluster.url, "--verify-data")
        assert done.returncode == 0, done.stdout + done.stderr
        for node in cluster.routing().nodes:
            samples = scrape(node.metrics_address)
            assert samples.total("chainfs_scrub_passes_total") >= 1
            assert samples.total("chainfs_scrub_chunks_total") >= 1
            assert samples.total("chainfs_scrub_bad_chunks_total") == 0  # no false alarm beside writes
            assert samples.total("chainfs_chunk_repairs_total") == 0
