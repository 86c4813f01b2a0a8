"""The metadata store: key order, transactions that read their own writes, durability on reopen,
and (etcd) commits that refuse to apply over a concurrent change, ids unique across metaservers."""

from __future__ import annotations

import threading
from typing import Callable

import pytest

from chainfs.metaserver.store import C_INODE, C_NODE, Store, Txn, TxnConflict, dentry_key, inode_key


def test_keys_sort_numerically() -> None:
    assert inode_key(255) < inode_key(256) < inode_key(1 << 40)
    assert dentry_key(1, "zzz") < dentry_key(2, "a")
    assert dentry_key(1, "a") < dentry_key(1, "b") < dentry_key(1, "é")


def test_txn_reads_its_own_writes_and_merges_scans(open_store: Callable[..., Store]) -> None:
    with open_store("db") as store:
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


def test_counters_persist(open_store: Callable[..., Store]) -> None:
    # C_NODE is a transactional counter on both backends (inode ids come in blocks on etcd).
    with open_store("db") as store:
        txn = store.txn()
        assert [txn.allocate(C_NODE, 2) for _ in range(3)] == [2, 3, 4]
        store.commit(txn)
    with open_store("db") as store:
        txn = store.txn()
        assert txn.allocate(C_NODE, 2) == 5
        txn.reserve(C_NODE, 3)
        assert txn.allocate(C_NODE, 2) == 6
        txn.reserve(C_NODE, 10)
        assert txn.allocate(C_NODE, 2) == 11


def test_inode_ids_increase_across_reopen(open_store: Callable[..., Store]) -> None:
    with open_store("db") as store:
        txn = store.txn()
        first = [txn.allocate(C_INODE, 2) for _ in range(3)]
        store.commit(txn)
    with open_store("db") as store:
        txn = store.txn()
        later = txn.allocate(C_INODE, 2)
    assert first == sorted(set(first)) and first[0] == 2 and later > first[-1]


def test_closed_store_refuses(open_store: Callable[..., Store]) -> None:
    store = open_store("db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError):
        store.get(b"x")


# ---- etcd: optimistic transactions between metaservers ----


def race(a: Store, b: Store, read: Callable[[Txn], object], expect: object,
         write: Callable[[Txn], None]) -> bool:
    """a's txn reads (and gets `expect`), b commits `write`, then a commits a write of its own:
    True when a's commit went through, False when it was refused (nothing of it applied)."""
    t1 = a.txn()
    assert read(t1) == expect
    t1.link(99, "marker", 1)
    t2 = b.txn()
    write(t2)
    b.commit(t2)
    try:
        a.commit(t1)
    except TxnConflict:
        assert a.lookup(99, "marker") is None
        return False
    assert b.lookup(99, "marker") == 1
    t3 = a.txn()
    t3.unlink(99, "marker")
    a.commit(t3)
    return True


@pytest.mark.parametrize("meta_backend", ["etcd"])
def test_etcd_commit_refuses_over_a_concurrent_change(open_store: Callable[..., Store]) -> None:
    a, b = open_store("db"), open_store("db")  # two metaservers on one prefix
    setup = a.txn()
    setup.link(7, "x", 1)
    a.commit(setup)
    # a read key changed meanwhile
    assert not race(a, b, lambda t: t.lookup(7, "x"), 1, lambda t: t.link(7, "x", 9))
    # a key that was absent when read appeared meanwhile
    assert not race(a, b, lambda t: t.lookup(7, "z"), None, lambda t: t.link(7, "z", 4))
    # a scanned directory gained an entry meanwhile (a phantom)
    assert not race(a, b, lambda t: t.has_children(8), False, lambda t: t.link(8, "new", 6))
    # a scanned entry went away meanwhile
    assert not race(a, b, lambda t: [n for n, _ in t.children(7)], ["x", "z"], lambda t: t.unlink(7, "z"))
    # and an unrelated change does not get in the way
    assert race(a, b, lambda t: t.lookup(7, "x"), 9, lambda t: t.link(10, "elsewhere", 8))


@pytest.mark.parametrize("meta_backend", ["etcd"])
def test_etcd_inode_ids_never_collide_across_metaservers(open_store: Callable[..., Store]) -> None:
    stores = [open_store("db") for _ in range(3)]
    got: list[list[int]] = [[] for _ in range(6)]

    def take(i: int) -> None:
        txn = stores[i % 3].txn()
        got[i].extend(txn.allocate(C_INODE, 2) for _ in range(300))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ids = [x for ids in got for x in ids]
    assert len(ids) == 1800 and len(set(ids)) == 1800 and min(ids) >= 2
