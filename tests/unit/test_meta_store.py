"""The metadata store: key order, transactions that read their own writes, durability on reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainfs.metaserver.store import C_INODE, MetaStore, dentry_key, inode_key


def test_keys_sort_numerically() -> None:
    assert inode_key(255) < inode_key(256) < inode_key(1 << 40)
    assert dentry_key(1, "zzz") < dentry_key(2, "a")
    assert dentry_key(1, "a") < dentry_key(1, "b") < dentry_key(1, "é")


def test_txn_reads_its_own_writes_and_merges_scans(tmp_path: Path) -> None:
    with MetaStore(tmp_path / "db") as store:
        txn = store.txn()
        for name in ("b", "d", "f"):
            txn.link(7, name, ord(name))
        txn.link(8, "other", 1)
        store.commit(txn)
        assert txn.writes == {}
        txn = store.txn()
        txn.link(7, "a", 1)
        txn.link(7, "e", 2)
        txn.unlink(7, "d")
        txn.link(7, "f", 3)  # overwrite
        txn.link(7, "g", 4)
        assert txn.lookup(7, "d") is None and txn.lookup(7, "f") == 3
        assert list(txn.children(7)) == [("a", 1), ("b", ord("b")), ("e", 2), ("f", 3), ("g", 4)]
        assert list(txn.children(7, start_after="b")) == [("e", 2), ("f", 3), ("g", 4)]
        # the store itself has not changed yet
        assert list(store.children(7)) == [("b", ord("b")), ("d", ord("d")), ("f", ord("f"))]
        store.commit(txn)
        assert [n for n, _ in store.children(7)] == ["a", "b", "e", "f", "g"]
        assert list(store.children(8)) == [("other", 1)]
        assert not store.has_children(9)
        txn = store.txn()
        txn.unlink(8, "other")
        assert not txn.has_children(8) and store.has_children(8)


def test_counters_persist(tmp_path: Path) -> None:
    with MetaStore(tmp_path / "db") as store:
        txn = store.txn()
        assert [txn.allocate(C_INODE, 2) for _ in range(3)] == [2, 3, 4]
        store.commit(txn)
    with MetaStore(tmp_path / "db") as store:
        txn = store.txn()
        assert txn.allocate(C_INODE, 2) == 5
        txn.reserve(C_INODE, 3)
        assert txn.allocate(C_INODE, 2) == 6
        txn.reserve(C_INODE, 10)
        assert txn.allocate(C_INODE, 2) == 11


def test_closed_store_refuses(tmp_path: Path) -> None:
    store = MetaStore(tmp_path / "db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError):
        store.get(b"x")
