"""The chunk engine of one target, with a real RocksDB in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chainfs.common import config
from chainfs.common.checksum import crc32c
from chainfs.common.errors import ChainfsError, Reason
from chainfs.storageserver.chunk_ids import ChunkKey, chunk_key, validate_chunk_size, validate_write
from chainfs.storageserver.chunk_store import RECENT_REQUESTS, ChunkStore

K = ChunkKey(0x1234, 7)


@pytest.fixture
def store(tmp_path: Path):
    s = ChunkStore(tmp_path / "target")
    yield s
    s.close()


def put(store: ChunkStore, key: ChunkKey, version: int, data: bytes, rid: str = "", chain_version: int = 1):
    store.stage(key, version, data)
    return store.commit(key, version, len(data), crc32c(data), chain_version, rid)


def chunk_files(store: ChunkStore, key: ChunkKey) -> list[str]:
    shard = store.root / "chunks" / f"{key.inode % 256:02x}"
    prefix = f"{key.inode:016x}-{key.index:08x}."
    return sorted(p.name for p in shard.iterdir() if p.name.startswith(prefix))


def test_stage_then_commit(store: ChunkStore) -> None:
    assert store.get_meta(K) is None
    store.stage(K, 1, b"hello world")
    meta = store.get_meta(K)
    assert (meta.version, meta.pending_version) == (0, 1)
    assert store.open_committed(K) is None  # nothing committed yet
    meta = store.commit(K, 1, 11, crc32c(b"hello world"), 5, "client:1")
    assert (meta.version, meta.pending_version, meta.length, meta.chain_version) == (1, 0, 11, 5)
    assert meta.crc == crc32c(b"hello world")
    assert (meta.chunk.inode, meta.chunk.index) == K
    assert store.read_committed(K)[1] == b"hello world"
    assert store.read_committed(K, 6, 100)[1] == b"world"
    assert store.read_committed(K, 50, 10)[1] == b""
    assert list(store.get_record(K).recent_requests) == ["client:1"]
    assert chunk_files(store, K) == ["0000000000001234-00000007.v1"]
    assert store.chunk_path(K, 1).parent.name == "34"


def test_copy_on_write_keeps_committed_until_commit(store: ChunkStore) -> None:
    put(store, K, 1, b"A" * 1000)
    store.stage(K, 2, b"B" * 500)
    # The committed version stays readable while the update is pending.
    meta, data = store.read_committed(K)
    assert (meta.version, meta.pending_version, data) == (1, 2, b"A" * 1000)
    assert chunk_files(store, K) == ["0000000000001234-00000007.v1", "0000000000001234-00000007.v2"]
    put_meta = store.commit(K, 2, 500, crc32c(b"B" * 500), 1, "r2")
    assert (put_meta.version, put_meta.length) == (2, 500)
    assert store.read_committed(K)[1] == b"B" * 500
    assert chunk_files(store, K) == ["0000000000001234-00000007.v2"]


def test_open_file_survives_commit(store: ChunkStore) -> None:
    put(store, K, 1, b"old" * 100)
    meta, f = store.open_committed(K)
    put(store, K, 2, b"new" * 100)
    with f:
        assert f.read() == b"old" * 100  # the unlinked old version stays readable through the fd
    assert meta.version == 1


def test_recent_requests_keep_the_last_32(store: ChunkStore) -> None:
    for v in range(1, RECENT_REQUESTS + 6):
        put(store, K, v, bytes([v]) * 10, rid=f"c:{v}")
    rids = list(store.get_record(K).recent_requests)
    assert len(rids) == RECENT_REQUESTS
    assert rids[-1] == f"c:{RECENT_REQUESTS + 5}" and rids[0] == "c:6"


def test_abort_pending(store: ChunkStore) -> None:
    put(store, K, 1, b"keep")
    store.stage(K, 2, b"drop")
    assert store.abort_pending(K)
    meta = store.get_meta(K)
    assert (meta.version, meta.pending_version) == (1, 0)
    assert chunk_files(store, K) == ["0000000000001234-00000007.v1"]
    assert not store.abort_pending(K)
    # A chunk that only ever had a pending version disappears entirely.
    other = ChunkKey(99, 0)
    store.stage(other, 1, b"x")
    assert store.abort_pending(other)
    assert store.get_meta(other) is None and chunk_files(store, other) == []


def test_commit_requires_the_pending_version(store: ChunkStore) -> None:
    with pytest.raises(ChainfsError) as exc:
        store.commit(K, 1, 1, 0, 1)
    assert exc.value.reason == Reason.INTERNAL
    store.stage(K, 1, b"x")
    with pytest.raises(ChainfsError):
        store.commit(K, 2, 1, crc32c(b"x"), 1)


def test_restage_same_version_replaces_committed(store: ChunkStore) -> None:
    """A successor may be asked to store a version it already committed (the head aborted it)."""
    put(store, K, 3, b"first")
    store.stage(K, 3, b"second!")
    meta, data = store.read_committed(K)
    assert (meta.version, meta.pending_version, data) == (3, 3, b"first")
    store.commit(K, 3, 7, crc32c(b"second!"), 2, "r")
    meta, data = store.read_committed(K)
    assert (meta.version, meta.pending_version, meta.length, data) == (3, 0, 7, b"second!")
    assert chunk_files(store, K) == ["0000000000001234-00000007.v3"]


def test_stage_from_a_file_object(store: ChunkStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    payload = os.urandom(3 * (1 << 20) + 17)
    src.write_bytes(payload)
    with open(src, "rb") as f:
        assert store.stage(K, 1, f) == len(payload)
    store.commit(K, 1, len(payload), crc32c(payload), 1)
    assert store.read_committed(K)[1] == payload


def test_recovery_discards_pending_and_strays(tmp_path: Path) -> None:
    root = tmp_path / "target"
    s = ChunkStore(root)
    put(s, K, 1, b"committed")
    s.stage(K, 2, b"pending")
    other = ChunkKey(5, 0)
    s.stage(other, 1, b"never committed")
    same = ChunkKey(6, 0)
    put(s, same, 4, b"v4")
    s.stage(same, 4, b"v4-new")  # same-version restage, not committed
    shard = root / "chunks" / "34"
    (shard / "0000000000001234-00000007.v9").write_bytes(b"stray")
    (shard / "0000000000001234-00000008.v1").write_bytes(b"stray, no metadata")
    (shard / "notes.txt").write_text("not ours")
    s.close()

    s = ChunkStore(root)
    try:
        meta, data = s.read_committed(K)
        assert (meta.version, meta.pending_version, data) == (1, 0, b"committed")
        assert s.get_meta(other) is None
        meta, data = s.read_committed(same)
        assert (meta.version, meta.pending_version, data) == (4, 0, b"v4")
        assert chunk_files(s, K) == ["0000000000001234-00000007.v1"]
        assert chunk_files(s, ChunkKey(0x1234, 8)) == []
        assert chunk_files(s, other) == [] and chunk_files(s, same) == ["0000000000000006-00000000.v4"]
        assert (shard / "notes.txt").exists()
    finally:
        s.close()


def test_recovery_finishes_an_interrupted_same_version_swap(tmp_path: Path) -> None:
    """Crash after the commit batch of a same-version restage, before the rename."""
    root = tmp_path / "target"
    s = ChunkStore(root)
    put(s, K, 2, b"old content")
    s.close()
    # What the batch wrote, then the crash: metadata names the new content, the file is still old.
    s = ChunkStore(root)
    s.stage(K, 2, b"new content!")
    record = s.get_record(K)
    record.meta.pending_version = 0
    record.meta.length = 12
    record.meta.crc = crc32c(b"new content!")
    s._write({K: record})
    s.close()
    s = ChunkStore(root)
    try:
        meta, data = s.read_committed(K)
        assert (meta.version, data) == (2, b"new content!")
        assert chunk_files(s, K) == ["0000000000001234-00000007.v2"]
    finally:
        s.close()


_CRASH_SCRIPT = """
import os, signal, sys
from chainfs.common.checksum import crc32c
from chainfs.storageserver.chunk_store import ChunkKey, ChunkStore
s = ChunkStore(sys.argv[1])
k = ChunkKey(0x1234, 7)
for v, data in ((1, b"one"), (2, b"two" * 1000)):
    s.stage(k, v, data)
    s.commit(k, v, len(data), crc32c(data), 1, f"r{v}")
s.stage(k, 3, b"three, never committed")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_recovery_after_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "target"
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(root)], timeout=30, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    s = ChunkStore(root)
    try:
        meta, data = s.read_committed(K)
        assert (meta.version, meta.pending_version, data) == (2, 0, b"two" * 1000)
        assert list(s.get_record(K).recent_requests) == ["r1", "r2"]
        assert chunk_files(s, K) == ["0000000000001234-00000007.v2"]
    finally:
        s.close()


def test_list_chunks_and_paging(store: ChunkStore) -> None:
    keys = [ChunkKey(i, j) for i in (3, 1, 2, 300) for j in (2, 0, 1)]
    for key in keys:
        put(store, key, 1, f"{key}".encode())
    store.stage(ChunkKey(2, 9), 1, b"pending only")  # not listed: nothing committed
    metas, more = store.list_chunks()
    assert [(m.chunk.inode, m.chunk.index) for m in metas] == sorted(keys)
    assert not more
    metas, more = store.list_chunks(inode=2)
    assert [(m.chunk.inode, m.chunk.index) for m in metas] == [(2, 0), (2, 1), (2, 2)]
    metas, more = store.list_chunks(limit=4)
    assert more and [(m.chunk.inode, m.chunk.index) for m in metas] == [(1, 0), (1, 1), (1, 2), (2, 0)]
    metas, more = store.list_chunks(start_after=ChunkKey(2, 0), limit=4)
    assert more and [(m.chunk.inode, m.chunk.index) for m in metas] == [(2, 1), (2, 2), (3, 0), (3, 1)]
    metas, more = store.list_chunks(inode=3, start_after=ChunkKey(3, 1))
    assert not more and [(m.chunk.inode, m.chunk.index) for m in metas] == [(3, 2)]
    metas, _ = store.list_chunks(inode=3, start_after=ChunkKey(1, 5))
    assert len(metas) == 3
    assert store.list_chunks(inode=4)[0] == []
    assert store.list_keys(2, 1) == [ChunkKey(2, 1), ChunkKey(2, 2), ChunkKey(2, 9)]
    assert store.list_keys(300) == [ChunkKey(300, 0), ChunkKey(300, 1), ChunkKey(300, 2)]


def test_remove(store: ChunkStore) -> None:
    put(store, K, 1, b"one")
    store.stage(K, 2, b"two")
    assert store.remove(K)
    assert store.get_meta(K) is None and store.open_committed(K) is None
    assert chunk_files(store, K) == []
    assert not store.remove(K)
    put(store, K, 1, b"again")  # a removed chunk can be written anew
    assert store.read_committed(K)[1] == b"again"


def test_validation() -> None:
    for inode, index in ((0, 0), (-1, 0), (1 << 64, 0), (1, -1), (1, 1 << 31)):
        with pytest.raises(ChainfsError) as exc:
            chunk_key(inode, index)
        assert exc.value.reason == Reason.INVALID_ARGUMENT
    assert chunk_key(1, (1 << 31) - 1) == ChunkKey(1, (1 << 31) - 1)
    for size in (0, 3, 4097, config.MAX_CHUNK_SIZE * 2):
        with pytest.raises(ChainfsError):
            validate_chunk_size(size)
    validate_chunk_size(config.MAX_CHUNK_SIZE)
    validate_write(4096, 4000, 96, False)
    for args in ((4096, 4000, 97, False), (4096, 1, 10, True), (4095, 0, 1, False), (4096, 0, 4097, True)):
        with pytest.raises(ChainfsError) as exc:
            validate_write(*args)
        assert exc.value.reason == Reason.INVALID_ARGUMENT


def test_stage_validates(store: ChunkStore) -> None:
    with pytest.raises(ChainfsError):
        store.stage(ChunkKey(0, 1), 1, b"x")
    with pytest.raises(ChainfsError):
        store.stage(K, 0, b"x")
    with pytest.raises(ChainfsError):
        store.stage(ChunkKey(1, 1 << 31), 1, b"x")
    assert store.get_meta(K) is None


def test_concurrent_reads_during_commits(store: ChunkStore) -> None:
    """Readers always get data that belongs to the metadata they got, across both commit paths."""
    contents = {v: bytes([v % 251]) * (1000 + v) for v in range(1, 200)}
    put(store, K, 1, contents[1])
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            meta, data = store.read_committed(K)
            reads[0] += 1
            if crc32c(data) != meta.crc or len(data) != meta.length:
                errors.append(f"torn read at version {meta.version}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        version = 1
        for v in range(2, 200):
            if time.monotonic() > deadline:
                break
            data = contents[v]
            if v % 3 == 0:  # re-stage the committed version (the same-name swap path)
                store.stage(K, version, data)
                store.commit(K, version, len(data), crc32c(data), 1)
            else:
                version += 1
                put(store, K, version, data)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not errors, errors[:5]
    assert reads[0] > 0
