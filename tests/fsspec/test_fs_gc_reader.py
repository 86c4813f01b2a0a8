"""A reader holding a file whose chunks were collected (after a replace) fails; it never gets zeros."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.proto import meta_pb2 as mpb

pytestmark = pytest.mark.integration


def test_open_reader_of_collected_file_raises(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", storage_nodes=3, replicas=3, targets_per_node=1,
                      gc_interval=0.2, gc_grace=0.0) as cluster:
        host, port = cluster.address.rsplit(":", 1)
        fs = fsspec.filesystem("chainfs", host=host, port=int(port), skip_instance_cache=True)
        fs.client.mkdir("/d", layout=mpb.Layout(chunk_size=64 * 1024, stripe_width=1))
        old = bytes(range(256)) * 1024  # 256 KiB, 4 chunks, no zero run longer than one byte
        fs.pipe_file("/d/f", old)
        inode = fs.client.stat("/d/f")
        with fs.open("/d/f", "rb", block_size=64 * 1024, cache_options={}) as f:
            assert f.read(1000) == old[:1000]
            fs.pipe_file("/d/f", b"new content")          # replaces the file; the old inode is GC'd
            chain = inode.layout.chains[0]
            wait_for(lambda: not fs.client.storage.list_chunks(chain, 0, inode.id), 30,
                     "the old file's chunks to be collected")
            with pytest.raises(FileNotFoundError) as info:
                f.seek(200 * 1024)
                f.read(1000)
            assert "/d/f" in str(info.value)
        assert fs.cat_file("/d/f") == b"new content"
