"""Never a wrong byte (issue 12, findings 1 and 2): one replica's chunk file rots (a flipped byte),
is truncated or is deleted, and full and partial reads (ChainClient.read_file with offsets, fsspec
cat_file ranges, f.seek + read) from every replica (by name, and any), over short-circuit and the
network, return the right bytes; reading the bad replica by name may instead fail with OSError.
With every replica bad, reads fail with OSError, never return bytes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import fsspec
import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb

from tests.chunkfiles import replica_file, rot

pytestmark = pytest.mark.integration

CHUNK = 256 * 1024
SIZE = 2 * CHUNK + 12345
BAD_AT = 70_000  # inside chunk 0's second 64 KiB block
# (offset, length) ranges: around the bad byte, inside the good first block, whole chunk 0, across
# chunks, the whole file, the tail of the file.
RANGES = [(BAD_AT - 10, 100), (0, 1000), (50, 150), (0, CHUNK), (CHUNK - 500, 1000), (0, SIZE),
          (SIZE - 100, 100), (CHUNK // 2 + 3, CHUNK)]


def chunk_file(client: ChainClient, inode: mpb.Inode, index: int, replica: int) -> Path:
    return replica_file(client.routing.chain(inode.layout.chains[index % len(inode.layout.chains)]),
                        inode, index, replica)


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(BAD_AT)


def delete(path: Path) -> None:
    path.unlink()


FAULTS: dict[str, Callable[[Path], None]] = {"rot": lambda path: rot(path, BAD_AT), "truncate": truncate, "delete": delete}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Scrub off: the read path alone must keep wrong bytes out (a scrub, or the repair a bad
    read asks for, would mend the replica under the test)."""
    with LocalCluster(tmp_path_factory.mktemp("integrity"), storage_nodes=3, replicas=3, targets_per_node=1,
                      fsync=False, scrub_mib_s=0) as c:
        yield c


@pytest.fixture(scope="module")
def root(cluster: LocalCluster) -> str:
    c = ChainClient(cluster.address)
    path = f"/integrity-{random.randrange(1 << 30)}"
    c.mkdir(path, layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
    return path


def read_all_ways(cluster: LocalCluster, path: str, data: bytes, bad: set[int]) -> int:
    """Reads every range every way; returns how many reads failed (only reads of a bad replica by
    name may fail). Asserts no read ever returns wrong bytes."""
    failures = 0
    host, port = cluster.address.rsplit(":", 1)
    for short_circuit in (True, False):
        c = ChainClient(cluster.address, short_circuit=short_circuit, retry_deadline=10.0)
        for replica in (None, 0, 1, 2):
            for offset, length in RANGES:
                want = data[offset:offset + length]
                try:
                    got = c.read_file(path, offset, length, replica=replica)
                except OSError:
                    assert replica in bad, f"read of {offset}+{length} from replica {replica} failed"
                    failures += 1
                    continue
                assert got == want, f"wrong bytes: {offset}+{length} replica {replica} sc {short_circuit}"
        fs = fsspec.filesystem("chainfs", host=host, port=int(port), short_circuit=short_circuit,
                               skip_instance_cache=True)
        for offset, length in RANGES:
            assert fs.cat_file(path, offset, offset + length) == data[offset:offset + length]
            with fs.open(path, "rb") as f:
                f.seek(offset)
                assert f.read(length) == data[offset:offset + length]
        assert fs.cat_file(path) == data
    return failures


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("replica", [0, 1, 2])
def test_one_bad_replica_never_returns_wrong_bytes(cluster: LocalCluster, root: str, fault: str,
                                                   replica: int) -> None:
    c = ChainClient(cluster.address)
    data = random.Random(f"{fault}-{replica}").randbytes(SIZE)
    path = f"{root}/{fault}-{replica}"
    inode = c.write_file(path, data)
    FAULTS[fault](chunk_file(c, inode, 0, replica))
    failures = read_all_ways(cluster, path, data, bad={replica})
    # Reading the bad replica by name, a range over the bad byte, is refused (twice: sc and not).
    assert failures >= 2


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_replica_bad_is_an_error_never_bytes(cluster: LocalCluster, root: str, fault: str) -> None:
    c = ChainClient(cluster.address, retry_deadline=5.0)
    data = random.Random(len(fault)).randbytes(SIZE)
    path = f"{root}/all-{fault}"
    inode = c.write_file(path, data)
    for replica in range(3):
        FAULTS[fault](chunk_file(c, inode, 0, replica))
    host, port = cluster.address.rsplit(":", 1)
    fs = fsspec.filesystem("chainfs", host=host, port=int(port), skip_instance_cache=True)
    for offset, length in [(BAD_AT - 10, 100), (0, CHUNK), (0, SIZE)]:
        for replica in (None, 0, 1, 2):
            with pytest.raises(OSError):
                c.read_file(path, offset, length, replica=replica)
        with pytest.raises(OSError):
            fs.cat_file(path, offset, offset + length)
    # Chunk 1 is intact: its bytes still read.
    assert c.read_file(path, CHUNK + 10, 1000) == data[CHUNK + 10:CHUNK + 1010]
