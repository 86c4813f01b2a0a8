"""The ChainFileSystem contract beyond fsspec's suite: metadata calls, ranges, batching, errors."""

from __future__ import annotations

import errno
import pickle
import time
from datetime import datetime

import fsspec
import pytest

from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb

pytestmark = pytest.mark.integration


def test_registered_protocol_and_urls(cluster: LocalCluster, base: str) -> None:
    host, port = cluster.address.rsplit(":", 1)
    fs = fsspec.filesystem("chainfs", host=host, port=int(port))
    assert isinstance(fs, ChainFileSystem) and fs.address == cluster.address
    with fsspec.open(f"{cluster.url}{base}/u.txt", "wb") as f:
        f.write(b"via url")
    fs2, path = fsspec.core.url_to_fs(f"{cluster.url}{base}/u.txt")
    assert fs2.address == cluster.address and path == f"{base}/u.txt"
    assert fs.cat_file(f"{base}/u.txt") == b"via url"
    assert ChainFileSystem._strip_protocol(f"chainfs://h:1{base}//x/") == f"{base}/x"
    assert fs.unstrip_protocol(f"{base}/u.txt") == f"{cluster.url}{base}/u.txt"
    assert pickle.loads(pickle.dumps(fs)).address == cluster.address


def test_listing_and_info(cfs: ChainFileSystem, base: str) -> None:
    cfs.pipe_file(f"{base}/d/f1", b"12345")
    cfs.mkdir(f"{base}/d/empty")
    names = cfs.ls(f"{base}/d", detail=False)
    assert sorted(names) == [f"{base}/d/empty", f"{base}/d/f1"]
    detail = {e["name"]: e for e in cfs.ls(f"{base}/d")}
    assert detail[f"{base}/d/f1"]["size"] == 5 and detail[f"{base}/d/empty"]["type"] == "directory"
    assert cfs.ls(f"{base}/d/f1", detail=False) == [f"{base}/d/f1"]  # ls(file) gives the file
    info = cfs.info(f"{base}/d/f1")
    assert info["type"] == "file" and info["size"] == 5
    assert cfs.exists(f"{base}/d/f1") and not cfs.exists(f"{base}/nope")
    assert isinstance(cfs.created(f"{base}/d/f1"), datetime)
    assert cfs.modified(f"{base}/d/f1") >= cfs.created(f"{base}/d/f1")


def test_paged_walk_find_glob_du(cluster: LocalCluster, base: str) -> None:
    host, port = cluster.address.rsplit(":", 1)
    fs = ChainFileSystem(host=host, port=int(port), list_page_size=3)  # many pages per directory
    for i in range(10):
        fs.pipe_file(f"{base}/w/f{i:02d}", b"x" * i)
    fs.pipe_file(f"{base}/w/sub/deep.csv", b"abc")
    assert len(fs.ls(f"{base}/w")) == 11
    walked = list(fs.walk(f"{base}/w"))
    assert walked[0][1] == ["sub"] and len(walked[0][2]) == 10
    assert len(fs.find(f"{base}/w")) == 11
    assert fs.glob(f"{base}/w/**/*.csv") == [f"{base}/w/sub/deep.csv"]
    assert fs.glob(f"{base}/w/f0?") == [f"{base}/w/f{i:02d}" for i in range(10)]
    assert fs.du(f"{base}/w") == sum(range(10)) + 3


def test_directories(cfs: ChainFileSystem, base: str) -> None:
    cfs.mkdir(f"{base}/a/b/c")  # create_parents=True by default
    with pytest.raises(FileExistsError):
        cfs.mkdir(f"{base}/a/b/c")
    with pytest.raises(FileNotFoundError):
        cfs.mkdir(f"{base}/x/y", create_parents=False)
    cfs.makedirs(f"{base}/a/b/c", exist_ok=True)
    with pytest.raises(FileExistsError):
        cfs.makedirs(f"{base}/a/b/c")
    with pytest.raises(OSError) as err:
        cfs.rmdir(f"{base}/a/b")
    assert err.value.errno == errno.ENOTEMPTY
    cfs.rmdir(f"{base}/a/b/c")
    cfs.pipe_file(f"{base}/a/file", b"1")
    with pytest.raises(NotADirectoryError):
        cfs.rmdir(f"{base}/a/file")
    cfs.rm(f"{base}/a", recursive=True)
    assert not cfs.exists(f"{base}/a")


def test_rm_cp_mv(cfs: ChainFileSystem, base: str) -> None:
    cfs.pipe({f"{base}/s/x": b"x" * 100, f"{base}/s/n/y": b"y"})
    cfs.cp_file(f"{base}/s/x", f"{base}/c/x2")  # parents appear implicitly
    assert cfs.cat_file(f"{base}/c/x2") == b"x" * 100
    cfs.cp_file(f"{base}/s/n", f"{base}/c/ndir")  # a directory copies as a directory
    assert cfs.isdir(f"{base}/c/ndir")
    cfs.copy(f"{base}/s", f"{base}/copy", recursive=True)
    assert cfs.cat_file(f"{base}/copy/n/y") == b"y"
    ino = cfs.info(f"{base}/s")["ino"]
    cfs.mv(f"{base}/s", f"{base}/moved/s2")  # one rename: same inode, parents created
    assert cfs.info(f"{base}/moved/s2")["ino"] == ino and not cfs.exists(f"{base}/s")
    cfs.pipe_file(f"{base}/other", b"other")
    cfs.mv(f"{base}/other", f"{base}/moved/s2/x")  # a file replaces a file atomically
    assert cfs.cat_file(f"{base}/moved/s2/x") == b"other"
    cfs.rm_file(f"{base}/moved/s2/x")
    cfs.rm([f"{base}/copy", f"{base}/copy/n"], recursive=True)
    assert not cfs.exists(f"{base}/copy")
    cfs.mkdir(f"{base}/e")
    cfs.rm_file(f"{base}/e")  # rm_file removes an empty directory
    assert not cfs.exists(f"{base}/e")


def test_cat_ranges_and_batching(cluster: LocalCluster, cfs: ChainFileSystem, base: str, rng_bytes) -> None:
    from chainfs.client import ChainClient

    ChainClient(cluster.address).mkdir(f"{base}/small", layout=mpb.Layout(chunk_size=64 << 10))
    a, b = rng_bytes(300_000, seed=1), rng_bytes(70_000, seed=2)
    cfs.pipe({f"{base}/small/a": a, f"{base}/small/b": b})
    p, q = f"{base}/small/a", f"{base}/small/b"
    assert cfs.cat_file(p, 100, 200_000) == a[100:200_000]  # crosses chunks
    assert cfs.cat_file(p, -1000) == a[-1000:]
    assert cfs.cat_file(p, 10, -10) == a[10:-10]
    assert cfs.cat_file(p, 500_000) == b""
    calls = []
    storage = cfs.client.storage
    original = storage.read_into
    storage.read_into = lambda specs, views, holes=None: (  # type: ignore[method-assign]
        calls.append(len(specs)) or original(specs, views, holes))
    try:
        got = cfs.cat_ranges([p, q, p, f"{base}/missing"], [0, 5, -70_000, 0], [70_000, None, None, 1])
        both = cfs.cat([p, q])
    finally:
        storage.read_into = original  # type: ignore[method-assign]
    assert got[:3] == [a[:70_000], b[5:], a[-70_000:]] and isinstance(got[3], FileNotFoundError)
    assert both == {p: a, q: b}
    assert calls == [2 + 2 + 2, 5 + 2], "all ranges of all files go out in one batched read"


def test_pipe_touch_checksum(cfs: ChainFileSystem, base: str) -> None:
    path = f"{base}/p"
    cfs.pipe_file(path, b"one")
    with pytest.raises(FileExistsError):
        cfs.pipe_file(path, b"two", mode="create")
    key, ck = cfs.ukey(path), cfs.checksum(path)
    assert cfs.ukey(path) == key
    cfs.pipe_file(path, b"two")
    assert cfs.ukey(path) != key and cfs.checksum(path) != ck
    cfs.touch(f"{base}/t")
    assert cfs.info(f"{base}/t")["size"] == 0
    cfs.touch(path, truncate=False)
    assert cfs.cat_file(path) == b"two"
    cfs.touch(path)
    assert cfs.cat_file(path) == b""
    cfs.invalidate_cache(path)
    cfs.invalidate_cache()


def test_file_modes(cfs: ChainFileSystem, base: str) -> None:
    path = f"{base}/m"
    with cfs.open(path, "wb") as f:
        f.write(b"hello ")
        assert not cfs.exists(path), "a wb file is invisible until close"
    with cfs.open(path, "ab") as f:
        assert f.tell() == 6
        f.write(b"world")
    assert cfs.cat_file(path) == b"hello world"
    with pytest.raises(FileExistsError):
        cfs.open(path, "xb")
    with cfs.open(f"{base}/x", "xb") as f:
        f.write(b"new")
    with cfs.open(path, "rb") as f:
        f.seek(6)
        assert f.read(3) == b"wor" and f.read() == b"ld"
    with pytest.raises(RuntimeError):
        with cfs.open(f"{base}/failed", "wb") as f:
            f.write(b"partial")
            raise RuntimeError("writer fails")
    assert not cfs.exists(f"{base}/failed"), "a failed writer leaves nothing visible"
    with cfs.open(path, "rt") as f:
        assert f.read() == "hello world"


def test_read_ahead_across_chunks(cluster: LocalCluster, cfs: ChainFileSystem, base: str, rng_bytes) -> None:
    from chainfs.client import ChainClient

    ChainClient(cluster.address).mkdir(f"{base}/ra", layout=mpb.Layout(chunk_size=64 << 10))
    data = rng_bytes(2 << 20, seed=3)
    cfs.pipe_file(f"{base}/ra/f", data)
    out = bytearray()
    with cfs.open(f"{base}/ra/f", "rb", block_size=256 << 10) as f:
        while piece := f.read(32 << 10):
            out += piece
        cache = f.cache
        assert cache.miss_count == 1, "after the first window, every window arrives by read-ahead"
    assert bytes(out) == data


def test_transactions(cfs: ChainFileSystem, base: str) -> None:
    with cfs.transaction:
        cfs.pipe_file(f"{base}/tx/a", b"a")
        with cfs.open(f"{base}/tx/b", "wb") as f:
            f.write(b"b")
        assert not cfs.exists(f"{base}/tx/a") and not cfs.exists(f"{base}/tx/b")
    assert cfs.cat([f"{base}/tx/a", f"{base}/tx/b"]) == {f"{base}/tx/a": b"a", f"{base}/tx/b": b"b"}
    tx = cfs.start_transaction()
    cfs.pipe_file(f"{base}/tx/c", b"c")
    cfs.pipe_file(f"{base}/tx/a", b"changed")
    tx.complete(commit=False)  # discard
    assert not cfs.exists(f"{base}/tx/c") and cfs.cat_file(f"{base}/tx/a") == b"a"


def test_bad_input(cluster: LocalCluster, cfs: ChainFileSystem, base: str) -> None:
    with pytest.raises(ValueError, match="port"):
        fsspec.open("chainfs://127.0.0.1:notaport/x").open()
    with pytest.raises(ValueError, match="HOST:PORT"):
        ChainFileSystem(address="no-port-here")
    cfs.pipe_file(f"{base}/file", b"1")
    with pytest.raises(NotADirectoryError):
        cfs.info(f"{base}/file/below")
    with pytest.raises(NotADirectoryError):
        cfs.pipe_file(f"{base}/file/below", b"1")
    with pytest.raises(OSError) as err:
        cfs.pipe_file(f"{base}/{'n' * 300}", b"1")
    assert err.value.errno == errno.ENAMETOOLONG
    with pytest.raises(IsADirectoryError):
        cfs.cat_file(base)
    start = time.monotonic()
    dead = ChainFileSystem(host="127.0.0.1", port=9, retry_deadline=2.0)
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        dead.ls("/")
    assert time.monotonic() - start < 15, "an unreachable cluster fails within its deadline"
