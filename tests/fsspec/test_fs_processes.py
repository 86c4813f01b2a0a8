"""The filesystem across processes and threads: pickling into fork and spawn children, atomic
replacement seen by a polling reader, and a writer that dies before commit."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import time

import pytest

from chainfs.client import ChainClient
from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb

pytestmark = pytest.mark.integration


def _child_copy(blob: bytes, path: str) -> None:
    fs = pickle.loads(blob)
    data = fs.cat_file(path)
    fs.pipe_file(path + ".child", data[::-1])


def _child_dies_mid_write(blob: bytes, path: str, started) -> None:
    fs = pickle.loads(blob)
    f = fs.open(path, "wb", block_size=64 << 10)
    f.write(os.urandom(1 << 20))  # several chunks written, never committed
    started.set()
    time.sleep(60)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pickled_fs_in_child(cfs: ChainFileSystem, base: str, method: str) -> None:
    path = f"{base}/p-{method}"
    cfs.pipe_file(path, b"abc" * 1000)
    cfs.ls(base)  # the parent's channels exist before the fork
    child = mp.get_context(method).Process(target=_child_copy, args=(pickle.dumps(cfs), path))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{method} child hung")
    assert child.exitcode == 0
    assert cfs.cat_file(path + ".child") == (b"abc" * 1000)[::-1]
    assert cfs.ls(base, detail=False)  # the parent still works after the fork


def test_reader_sees_old_or_new_whole(cluster: LocalCluster, cfs: ChainFileSystem, base: str) -> None:
    ChainClient(cluster.address).mkdir(f"{base}/atomic", layout=mpb.Layout(chunk_size=64 << 10))
    path = f"{base}/atomic/f"
    versions = 15

    def content(v: int) -> bytes:
        return bytes([v]) * (200_000 + 10_000 * v)  # several chunks, a length per version

    cfs.pipe_file(path, content(0))
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for v in range(1, versions + 1):
                with cfs.open(path, "wb", block_size=64 << 10) as f:
                    data = content(v)
                    for pos in range(0, len(data), 50_000):
                        f.write(data[pos:pos + 50_000])
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        data = cfs.cat_file(path)
        v = data[0]
        assert data == content(v), f"a reader saw a partial or mixed file (version {v}, {len(data)} bytes)"
        seen.add(v)
    thread.join(timeout=60)
    assert not errors, errors
    assert cfs.cat_file(path) == content(versions)
    assert len(seen) > 1, "the reader should have seen the file change"


def test_writer_that_dies_leaves_nothing(cfs: ChainFileSystem, base: str) -> None:
    path = f"{base}/dies"
    ctx = mp.get_context("fork")
    started = ctx.Event()
    child = ctx.Process(target=_child_dies_mid_write, args=(pickle.dumps(cfs), path, started))
    child.start()
    try:
        assert started.wait(timeout=60), "the child never started writing"
        assert not cfs.exists(path)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
    assert not cfs.exists(path)
    assert cfs.ls(base, detail=False) == []
