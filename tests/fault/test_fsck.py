"""`chainfs fsck URL`: exit 0 on a clean cluster; prints the difference and exits 1 when one replica
holds a different chunk, and when a target is not serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chainfs.cluster import auth_files
from chainfs.common import auth
from chainfs.common.checksum import crc32c
from chainfs.common.rpc import ChannelPool
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

from tests.grants import capability
from tests.fault.harness import CHUNK, WAIT, client, make_cluster, node_index, the_chain, wait_state

pytestmark = pytest.mark.fault


def run_fsck(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chainfs.cli.main", "fsck", url],
                          capture_output=True, text=True, timeout=120)


def test_fsck_cli(tmp_path: Path) -> None:
    with make_cluster(tmp_path / "c") as cluster:
        c = client(cluster)
        c.mkdir("/f", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        inode = c.write_file("/f/x", b"a" * (CHUNK + 10))
        done = run_fsck(cluster.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "clean" in done.stdout

        # Make the tail's copy of chunk 1 differ, as a lost update would: a forwarded full-chunk
        # write from its predecessor with a newer version.
        chain = the_chain(cluster)
        pred, tail = chain.targets[1], chain.targets[2]
        address = next(n.address for n in cluster.routing().nodes if n.node_id == tail.node_id)
        bogus = b"b" * 10
        header = spb.WriteHeader(chain_id=chain.chain_id, chain_version=chain.version,
                                 chunk=spb.ChunkId(inode=inode.id, index=1), length=len(bogus), replace=True,
                                 data_crc=crc32c(bogus), chunk_size=CHUNK, version=7, from_target=pred.target_id)
        # Only a node may forward (a user token's forward is PERMISSION_DENIED): speak as one.
        stub = spb_grpc.StorageStub(ChannelPool().get(address, auth.read_token_file(Path(cluster.root) / auth_files.AUTH_DIR / "storage-0.token")))
        stub.Write(iter([spb.WriteRequest(header=header), spb.WriteRequest(data=bogus)]), timeout=10)
        done = run_fsck(cluster.url)
        assert done.returncode == 1
        assert f"chunk {inode.id}:1: replicas differ" in done.stdout, done.stdout

        # A target that is not serving cannot be compared: reported, non-zero.
        index = node_index(cluster, tail.node_id)
        cluster.kill_storage(index)
        wait_state(cluster, tail.node_id, mpb.OFFLINE, WAIT)
        done = run_fsck(cluster.url)
        assert done.returncode == 1 and "offline, not compared" in done.stdout, done.stdout


def test_fsck_names_files_whose_chunks_are_gone(tmp_path: Path) -> None:
    """A file just written (its closed session still remembered for retries) whose chunk files are
    deleted on every replica, then whose chunks are removed with their metadata: fsck exits 1 and
    names the file each time, and not the healthy one beside it."""
    with make_cluster(tmp_path / "c") as cluster:
        c = client(cluster)
        c.mkdir("/g", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        c.write_file("/g/keep", b"k" * (CHUNK + 5))
        gone = c.write_file("/g/gone", b"g" * (2 * CHUNK + 7))
        done = run_fsck(cluster.url)
        assert done.returncode == 0, done.stdout + done.stderr

        files = sorted((tmp_path / "c").rglob(f"{gone.id:016x}-{1:08x}.*"))
        assert len(files) == 3, files  # one per replica
        for path in files:
            path.unlink()
        done = run_fsck(cluster.url)
        assert done.returncode == 1, done.stdout
        assert f"file /g/gone (inode {gone.id}): 1 of 3 chunks missing on every replica (chunks 1)" in done.stdout
        assert done.stdout.count(f"chunk {gone.id}:1: target") == 3, done.stdout  # each replica named
        assert "/g/keep" not in done.stdout

        chain = the_chain(cluster)
        head = next(n.address for n in cluster.routing().nodes if n.node_id == chain.targets[0].node_id)
        stub = spb_grpc.StorageStub(ChannelPool().get(head))
        stub.RemoveChunks(spb.RemoveChunksRequest(chain_id=chain.chain_id, chain_version=chain.version,
                                                  inode=gone.id, from_index=0, request_id="test:rm",
                                                  capability=capability(cluster, gone.id, "d")), timeout=10)
        done = run_fsck(cluster.url)
        assert done.returncode == 1, done.stdout
        assert f"file /g/gone (inode {gone.id}): 3 of 3 chunks missing on every replica" in done.stdout
        assert "/g/keep" not in done.stdout
