"""Verifying a committed chunk copy and replacing a bad one in place (real RocksDB in tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chainfs.common.checksum import BLOCK_BYTES, block_crcs, crc32c
from chainfs.common.errors import ChainfsError, Reason
from chainfs.storageserver.chunk_ids import ChunkKey
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.repair import check_copy

K = ChunkKey(0x42, 3)
DATA = os.urandom(3 * BLOCK_BYTES + 17)


@pytest.fixture
def store(tmp_path: Path):
    s = ChunkStore(tmp_path / "target", fsync=False)
    s.stage(K, 1, DATA)
    s.commit(K, 1, len(DATA), crc32c(DATA), 1)
    yield s
    s.close()


def test_check_copy_finds_rot_truncation_and_deletion(store: ChunkStore) -> None:
    assert check_copy(store, K)[2] == ""
    path = store.chunk_path(K, 1)
    raw = bytearray(path.read_bytes())
    raw[BLOCK_BYTES + 5] ^= 1
    path.write_bytes(raw)
    assert "CRC32C" in check_copy(store, K)[2]
    os.truncate(path, 10)
    assert "shorter" in check_copy(store, K)[2]
    path.unlink()
    assert "missing" in check_copy(store, K)[2]
    assert check_copy(store, ChunkKey(0x42, 4)) == (None, b"", "")


def test_replace_committed_installs_a_good_copy_as_the_same_version(store: ChunkStore, tmp_path: Path) -> None:
    store.chunk_path(K, 1).unlink()
    with pytest.raises(ChainfsError) as err:
        store.replace_committed(K, 1, DATA[:-1] + b"x")  # not what the metadata promises
    assert err.value.reason == Reason.CHECKSUM_MISMATCH
    with pytest.raises(ChainfsError) as err:
        store.replace_committed(K, 2, DATA)  # not the committed version
    assert err.value.reason == Reason.BUSY
    meta = store.replace_committed(K, 1, DATA)
    assert meta.version == 1 and list(meta.block_crcs) == block_crcs(DATA)
    assert store.read_committed(K)[1] == DATA and check_copy(store, K)[2] == ""
    assert not store.chunk_path(K, 1).with_name(store.chunk_path(K, 1).name + ".new").exists()


def test_an_interrupted_replacement_is_finished_at_startup(tmp_path: Path) -> None:
    s = ChunkStore(tmp_path / "t", fsync=False)
    s.stage(K, 1, DATA)
    s.commit(K, 1, len(DATA), crc32c(DATA), 1)
    path = s.chunk_path(K, 1)
    s.close()
    path.with_name(path.name + ".new").write_bytes(DATA)  # the good copy landed, the rename did not
    path.write_bytes(b"rotten")
    s = ChunkStore(tmp_path / "t", fsync=False)
    try:
        assert s.read_committed(K)[1] == DATA
    finally:
        s.close()
