"""Namespace logic against each real backend (RocksDB in tmp_path, etcd): every operation, its errors,
sessions, GC."""

from __future__ import annotations

from typing import Callable

import pytest

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.store import ROOT_ID, Store
from chainfs.proto import meta_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


class World:
    """A store, a cluster with 3 nodes x 4 targets (4 chains of 3), and a namespace on top."""

    def __init__(self, open_store: Callable[..., Store], with_chains: bool = True, name: str = "meta") -> None:
        self.open_store = open_store
        self.name = name
        self.clock = Clock()
        self.open(with_chains)

    def open(self, with_chains: bool = True) -> None:
        self.store = self.open_store(self.name)
        self.cluster = ClusterManager(self.store, replication=3)
        if with_chains and not self.cluster.chains:
            for n in range(3):
                self.cluster.register(0, f"127.0.0.1:{7000 + n}", [(0, f"/d{n}/{t}") for t in range(4)])
        self.ns = Namespace(self.store, self.cluster, replication=3, lease_s=60, clock_ns=self.clock)

    def reopen(self) -> None:
        self.store.close()
        self.open()


@pytest.fixture
def w(open_store: Callable[..., Store]) -> World:
    return World(open_store)


@pytest.fixture
def ns(w: World) -> Namespace:
    return w.ns


def expect(r: Reason, fn, *args, **kwargs) -> ChainfsError:
    with pytest.raises(ChainfsError) as ei:
        fn(*args, **kwargs)
    assert ei.value.reason == r, ei.value.message
    return ei.value


def names(ns: Namespace, path: str) -> list[str]:
    entries, more = ns.list(path, limit=config.MAX_LIST_LIMIT)
    assert not more
    return [e.name for e in entries]


# ---- root, mkdir, create, stat ----


def test_root_exists_with_default_layout(ns: Namespace) -> None:
    root = ns.stat("/")
    assert root.id == ROOT_ID and root.type == pb.DIRECTORY and root.parent_id == ROOT_ID
    assert root.layout.chunk_size == config.DEFAULT_CHUNK_SIZE
    assert root.layout.stripe_width == config.DEFAULT_STRIPE_WIDTH
    assert root.layout.replication == 3
    assert ns.stat("") == root


def test_mkdir_and_errors(ns: Namespace) -> None:
    d = ns.mkdir("/a")
    assert d.type == pb.DIRECTORY and d.parent_id == ROOT_ID
    expect(Reason.EXISTS, ns.mkdir, "/a")
    assert ns.mkdir("/a", parents=True).id == d.id
    expect(Reason.NOT_FOUND, ns.mkdir, "/x/y")
    deep = ns.mkdir("b/c/d", parents=True)  # relative paths are taken from the root
    assert ns.stat("/b/c/d").id == deep.id
    assert ns.stat("/b/c").parent_id == ns.stat("/b").id
    ns.create("/f")
    expect(Reason.EXISTS, ns.mkdir, "/f")
    expect(Reason.EXISTS, ns.mkdir, "/f", parents=True)
    expect(Reason.NOT_A_DIRECTORY, ns.mkdir, "/f/g")
    expect(Reason.NOT_A_DIRECTORY, ns.mkdir, "/f/g", parents=True)
    expect(Reason.EXISTS, ns.mkdir, "/")
    assert ns.mkdir("/", parents=True).id == ROOT_ID
    expect(Reason.INVALID_ARGUMENT, ns.mkdir, "/..")
    expect(Reason.NAME_TOO_LONG, ns.mkdir, "/" + "x" * 300)


def test_mkdir_layout_inherits_and_validates(ns: Namespace) -> None:
    d = ns.mkdir("/big", layout=pb.Layout(chunk_size=1 << 20))
    assert d.layout.chunk_size == 1 << 20 and d.layout.stripe_width == config.DEFAULT_STRIPE_WIDTH
    sub = ns.mkdir("/big/sub")
    assert sub.layout.chunk_size == 1 << 20
    expect(Reason.INVALID_ARGUMENT, ns.mkdir, "/bad", layout=pb.Layout(chunk_size=5000))
    expect(Reason.INVALID_ARGUMENT, ns.mkdir, "/bad", layout=pb.Layout(chunk_size=1024))
    expect(Reason.INVALID_ARGUMENT, ns.mkdir, "/bad", layout=pb.Layout(chunk_size=config.MAX_CHUNK_SIZE * 2))


def test_create_file_layout_and_chains(ns: Namespace) -> None:
    f = ns.create("/f")
    assert f.type == pb.FILE and f.length == 0
    assert f.layout.chunk_size == config.DEFAULT_CHUNK_SIZE
    # 4 chains, stripe width 4: all of them, starting at inode_id % 4.
    assert len(f.layout.chains) == 4 and sorted(f.layout.chains) == [1, 2, 3, 4]
    assert f.layout.chains[0] == [1, 2, 3, 4][f.id % 4]
    g = ns.create("/g", layout=pb.Layout(stripe_width=2, chunk_size=1 << 16))
    assert len(g.layout.chains) == 2 and g.layout.chunk_size == 1 << 16
    assert g.layout.chains[0] == [1, 2, 3, 4][g.id % 4]
    wide = ns.create("/wide", layout=pb.Layout(stripe_width=100))
    assert len(wide.layout.chains) == 4  # capped at the number of chains
    assert ns.stat("/f") == f


def test_create_errors(ns: Namespace) -> None:
    f = ns.create("/f")
    assert ns.create("/f").id == f.id  # not exclusive: existing file unchanged
    expect(Reason.EXISTS, ns.create, "/f", exclusive=True)
    ns.mkdir("/d")
    expect(Reason.IS_A_DIRECTORY, ns.create, "/d")
    expect(Reason.IS_A_DIRECTORY, ns.create, "/")
    expect(Reason.NOT_FOUND, ns.create, "/x/f")
    expect(Reason.NOT_A_DIRECTORY, ns.create, "/f/x")
    assert ns.create("/x/y/f", parents=True).type == pb.FILE
    expect(Reason.INVALID_ARGUMENT, ns.create, "/g", layout=pb.Layout(chunk_size=3 << 12))


def test_create_without_chains(open_store: Callable[..., Store]) -> None:
    world = World(open_store, with_chains=False, name="m")
    err = expect(Reason.NO_CHAINS, world.ns.create, "/f")
    assert "/f" in err.message
    world.ns.mkdir("/d")  # directories need no chains


def test_stat_errors(ns: Namespace) -> None:
    err = expect(Reason.NOT_FOUND, ns.stat, "/nope")
    assert "/nope" in err.message
    ns.create("/f")
    expect(Reason.NOT_A_DIRECTORY, ns.stat, "/f/x")


def test_mkdir_touches_parent_mtime(w: World) -> None:
    before = w.ns.stat("/").mtime_ns
    w.clock.now += 5
    w.ns.mkdir("/a")
    assert w.ns.stat("/").mtime_ns == before + 5


# ---- list ----


def test_list_paging_in_byte_order(ns: Namespace) -> None:
    ns.mkdir("/d")
    wanted = sorted((f"n{i:03d}" for i in range(25)), key=lambda s: s.encode())
    for name in reversed(wanted):
        ns.create(f"/d/{name}")
    ns.mkdir("/d/É")  # non-ASCII sorts after ASCII in UTF-8 byte order
    wanted.append("É")
    seen, after = [], ""
    while True:
        page, more = ns.list("/d", start_after=after, limit=7)
        seen += [e.name for e in page]
        assert len(page) <= 7
        if not more:
            break
        after = page[-1].name
    assert seen == wanted
    page, more = ns.list("/d")
    assert len(page) == 26 and not more
    page, more = ns.list("/d", limit=26)
    assert not more
    assert page[-1].inode.type == pb.DIRECTORY
    assert ns.list("/d", start_after="n024", limit=1)[0][0].name == "É"


def test_list_errors_and_empty(ns: Namespace) -> None:
    ns.create("/f")
    expect(Reason.NOT_A_DIRECTORY, ns.list, "/f")
    expect(Reason.NOT_FOUND, ns.list, "/nope")
    ns.mkdir("/e")
    assert ns.list("/e") == ([], False)


def test_list_does_not_leak_other_directories(ns: Namespace) -> None:
    # Dentry keys of sibling directories are adjacent; a listing must stop at its own prefix.
    ns.mkdir("/a")
    ns.create("/a/x")
    ns.mkdir("/b")
    ns.create("/b/y")
    assert names(ns, "/a") == ["x"]
    assert names(ns, "/b") == ["y"]
    assert names(ns, "/") == ["a", "b"]


# ---- rename ----


def test_rename_file_and_dir(ns: Namespace) -> None:
    ns.mkdir("/a/b", parents=True)
    f = ns.create("/a/b/f")
    ns.rename("/a/b/f", "/a/g")
    assert ns.stat("/a/g").id == f.id
    expect(Reason.NOT_FOUND, ns.stat, "/a/b/f")
    b = ns.stat("/a/b")
    ns.mkdir("/z")
    ns.rename("/a/b", "/z/b2")
    moved = ns.stat("/z/b2")
    assert moved.id == b.id and moved.parent_id == ns.stat("/z").id
    ns.create("/z/b2/inner")
    assert names(ns, "/z/b2") == ["inner"]
    assert names(ns, "/a") == ["g"]


def test_rename_edge_cases(w: World) -> None:
    ns = w.ns
    ns.mkdir("/a/b/c", parents=True)
    expect(Reason.INVALID_ARGUMENT, ns.rename, "/a", "/a/b/c/a")  # into its own subtree
    expect(Reason.INVALID_ARGUMENT, ns.rename, "/a", "/a/x")
    expect(Reason.INVALID_ARGUMENT, ns.rename, "/", "/x")
    expect(Reason.INVALID_ARGUMENT, ns.rename, "/a", "/")
    expect(Reason.NOT_FOUND, ns.rename, "/nope", "/x")
    expect(Reason.NOT_FOUND, ns.rename, "/a", "/nope/x")
    ns.rename("/a", "/a")  # same path: no-op
    ns.rename("/a/b", "/a/./b")
    assert ns.stat("/a/b/c")
    expect(Reason.NOT_FOUND, ns.rename, "/q", "/q")
    # dir onto empty dir replaces it; onto a non-empty dir fails
    ns.mkdir("/empty")
    ns.rename("/a/b/c", "/empty")
    assert ns.stat("/empty").parent_id == ROOT_ID
    expect(Reason.NOT_FOUND, ns.stat, "/a/b/c")
    ns.mkdir("/full/x", parents=True)
    expect(Reason.NOT_EMPTY, ns.rename, "/empty", "/full")
    # type clashes
    ns.create("/f")
    expect(Reason.IS_A_DIRECTORY, ns.rename, "/f", "/full")
    expect(Reason.NOT_A_DIRECTORY, ns.rename, "/full", "/f")
    expect(Reason.NOT_A_DIRECTORY, ns.rename, "/f", "/f/x")
    # moving a parent up over its own ancestor (non-empty) is refused
    expect(Reason.NOT_EMPTY, ns.rename, "/full/x", "/full")


def test_rename_file_onto_file_replaces_atomically(ns: Namespace) -> None:
    old = ns.create("/dst")
    new = ns.create("/src")
    ns.rename("/src", "/dst")
    assert ns.stat("/dst").id == new.id
    expect(Reason.NOT_FOUND, ns.stat, "/src")
    gc = {r.inode_id: r for r in ns.gc_records()}
    assert set(gc) == {old.id}
    assert gc[old.id].chains == list(old.layout.chains)
    assert gc[old.id].chunk_size == old.layout.chunk_size
    ns.remove_gc_records([old.id])
    assert ns.gc_records() == []


# ---- remove ----


def test_remove_file_and_dir(ns: Namespace) -> None:
    f = ns.create("/f")
    ns.remove("/f")
    expect(Reason.NOT_FOUND, ns.stat, "/f")
    assert [r.inode_id for r in ns.gc_records()] == [f.id]
    ns.mkdir("/d")
    ns.create("/d/x")
    expect(Reason.NOT_EMPTY, ns.remove, "/d")
    ns.remove("/d/x")
    ns.remove("/d")
    expect(Reason.NOT_FOUND, ns.remove, "/d")
    expect(Reason.INVALID_ARGUMENT, ns.remove, "/")
    expect(Reason.INVALID_ARGUMENT, ns.remove, "/", recursive=True)


def test_remove_recursive(ns: Namespace) -> None:
    files = [ns.create(p, parents=True) for p in ("/t/a/1", "/t/a/2", "/t/b/c/3", "/t/4")]
    ns.mkdir("/t/empty")
    ns.create("/keep")
    ns.remove("/t", recursive=True)
    expect(Reason.NOT_FOUND, ns.stat, "/t")
    assert names(ns, "/") == ["keep"]
    assert sorted(r.inode_id for r in ns.gc_records()) == sorted(f.id for f in files)
    # nothing of the subtree is left in the store (no orphan inodes or dentries)
    ids = {f.id for f in files}
    assert all(ns.store.get_inode(i) is None for i in ids)
    from chainfs.metaserver.store import P_DENTRY, P_INODE

    assert len(list(ns.store.scan(P_DENTRY))) == 1
    assert len(list(ns.store.scan(P_INODE))) == 2  # root and /keep


# ---- set_layout ----


def test_set_layout(ns: Namespace) -> None:
    ns.mkdir("/d")
    d = ns.set_layout("/d", pb.Layout(stripe_width=2))
    assert d.layout.stripe_width == 2 and d.layout.chunk_size == config.DEFAULT_CHUNK_SIZE
    assert len(ns.create("/d/f").layout.chains) == 2
    ns.create("/f")
    expect(Reason.NOT_A_DIRECTORY, ns.set_layout, "/f", pb.Layout(stripe_width=1))
    expect(Reason.INVALID_ARGUMENT, ns.set_layout, "/d", pb.Layout(chunk_size=12345))
    expect(Reason.NOT_FOUND, ns.set_layout, "/nope", pb.Layout(stripe_width=1))


# ---- ids and durability ----


def test_inode_ids_monotonic_across_reopen(w: World) -> None:
    a = w.ns.mkdir("/a")
    b = w.ns.create("/b")
    w.ns.remove("/b")
    w.reopen()
    c = w.ns.mkdir("/c")
    assert a.id < b.id < c.id
    assert w.ns.stat("/a").id == a.id
    s = w.ns.open_write("/d", pb.REPLACE)
    w.reopen()
    assert w.ns.create("/e").id > s.inode.id
    assert [r.session_id for r in w.ns.sessions()] == [s.session_id]
    fresh = w.ns.open_write("/f", pb.REPLACE).session_id
    assert fresh != s.session_id and len(fresh) == 32 and int(fresh, 16) >= 0  # 128 random bits


# ---- write sessions ----


def test_replace_is_atomic(w: World) -> None:
    ns = w.ns
    s0 = ns.open_write("/f", pb.REPLACE)
    expect(Reason.NOT_FOUND, ns.stat, "/f")  # not linked until close
    first = ns.close_write(s0.session_id, 10)
    assert ns.stat("/f") == first and first.length == 10 and first.id == s0.inode.id
    s1 = ns.open_write("/f", pb.REPLACE)
    assert s1.inode.id != first.id and s1.path == "/f"
    assert s1.lease_expires_ns == w.clock.now + 60 * 10**9
    assert ns.stat("/f") == first  # readers still see the old content
    second = ns.close_write(s1.session_id, 20)
    assert ns.stat("/f").id == second.id == s1.inode.id and second.length == 20
    assert [r.inode_id for r in ns.gc_records()] == [first.id]
    assert ns.close_write(s1.session_id, 20) == second  # a retried close replays its answer


def test_abandon_becomes_gc(ns: Namespace) -> None:
    s = ns.open_write("/f", pb.REPLACE, layout=pb.Layout(chunk_size=1 << 16))
    inode = ns.close_write(s.session_id, 5, commit=False)
    expect(Reason.NOT_FOUND, ns.stat, "/f")
    rec = ns.gc_records()
    assert [r.inode_id for r in rec] == [inode.id] and rec[0].chunk_size == 1 << 16
    assert ns.sessions() == []


def test_create_new(ns: Namespace) -> None:
    ns.create("/exists")
    expect(Reason.EXISTS, ns.open_write, "/exists", pb.CREATE_NEW)
    s = ns.open_write("/new", pb.CREATE_NEW)
    other = ns.open_write("/new", pb.CREATE_NEW)  # both may open; only the first close wins
    ns.close_write(s.session_id, 1)
    expect(Reason.EXISTS, ns.close_write, other.session_id, 2)
    assert ns.stat("/new").id == s.inode.id
    assert [r.inode_id for r in ns.gc_records()] == [other.inode.id]


def test_open_write_errors(ns: Namespace) -> None:
    ns.mkdir("/d")
    for mode in (pb.REPLACE, pb.CREATE_NEW, pb.APPEND):
        expect(Reason.IS_A_DIRECTORY, ns.open_write, "/d", mode)
        expect(Reason.IS_A_DIRECTORY, ns.open_write, "/", mode)
    expect(Reason.INVALID_ARGUMENT, ns.open_write, "/f", pb.WRITE_MODE_UNSPECIFIED)
    expect(Reason.NOT_FOUND, ns.open_write, "/x/f", pb.REPLACE)
    s = ns.open_write("/x/y/f", pb.REPLACE, parents=True)
    assert ns.stat("/x/y").type == pb.DIRECTORY
    ns.close_write(s.session_id, 0)
    expect(Reason.SESSION_EXPIRED, ns.renew_session, "ab" * 16)
    expect(Reason.SESSION_EXPIRED, ns.close_write, "ab" * 16, 0)
    for junk in ("", "999", "AB" * 16, "zz" * 16, "ab" * 17, 999):  # malformed ids: a bad request
        expect(Reason.INVALID_ARGUMENT, ns.renew_session, junk)
        expect(Reason.INVALID_ARGUMENT, ns.close_write, junk, 0)
    [bad] = ns.close_write_many([("999", 0, True)])
    assert isinstance(bad, ChainfsError) and bad.reason == Reason.INVALID_ARGUMENT


def test_replace_onto_directory_that_appeared(ns: Namespace) -> None:
    s = ns.open_write("/p", pb.REPLACE)
    ns.mkdir("/p")
    expect(Reason.IS_A_DIRECTORY, ns.close_write, s.session_id, 3)
    assert ns.stat("/p").type == pb.DIRECTORY
    assert [r.inode_id for r in ns.gc_records()] == [s.inode.id]


def test_replace_follows_parent_and_fails_if_parent_removed(ns: Namespace) -> None:
    ns.mkdir("/d")
    s = ns.open_write("/d/f", pb.REPLACE)
    ns.rename("/d", "/e")
    ns.close_write(s.session_id, 1)
    assert ns.stat("/e/f").id == s.inode.id
    s2 = ns.open_write("/e/g", pb.REPLACE)
    ns.remove("/e", recursive=True)
    expect(Reason.NOT_FOUND, ns.close_write, s2.session_id, 1)
    assert s2.inode.id in {r.inode_id for r in ns.gc_records()}


def test_append(ns: Namespace) -> None:
    s = ns.open_write("/log", pb.APPEND)
    created = ns.stat("/log")  # a missing file is created, empty and visible
    assert created.id == s.inode.id and created.length == 0
    ns.close_write(s.session_id, 100)
    assert ns.stat("/log").length == 100
    s2 = ns.open_write("/log", pb.APPEND)
    assert s2.inode.id == created.id and s2.inode.length == 100
    expect(Reason.INVALID_ARGUMENT, ns.close_write, s2.session_id, 50)
    done = ns.close_write(s2.session_id, 150)
    assert done.length == 150 and ns.stat("/log").id == created.id
    s3 = ns.open_write("/log", pb.APPEND)
    assert ns.close_write(s3.session_id, 999, commit=False).length == 150
    assert ns.gc_records() == []


def test_append_to_removed_file(ns: Namespace) -> None:
    s = ns.open_write("/log", pb.APPEND)
    ns.remove("/log")
    ns.remove_gc_records([s.inode.id])  # the collector already ran once
    expect(Reason.NOT_FOUND, ns.close_write, s.session_id, 10)
    assert [r.inode_id for r in ns.gc_records()] == [s.inode.id]  # collected again


def test_session_lease_renew_and_expiry(w: World) -> None:
    ns, clock = w.ns, w.clock
    s = ns.open_write("/f", pb.REPLACE)
    keep = ns.open_write("/g", pb.REPLACE)
    clock.now += 50 * 10**9
    renewed = ns.renew_session(keep.session_id)
    assert renewed.lease_expires_ns == clock.now + 60 * 10**9
    clock.now += 20 * 10**9  # s expired, keep did not
    assert ns.sweep_expired_sessions() == 1
    assert [r.inode_id for r in ns.gc_records()] == [s.inode.id]
    expect(Reason.SESSION_EXPIRED, ns.close_write, s.session_id, 1)
    ns.close_write(keep.session_id, 1)
    assert ns.stat("/g").id == keep.inode.id


def test_expired_session_refused_before_sweep(w: World) -> None:
    s = w.ns.open_write("/f", pb.REPLACE)
    w.clock.now += 61 * 10**9
    expect(Reason.SESSION_EXPIRED, w.ns.renew_session, s.session_id)
    assert w.ns.sessions() == []
    assert [r.inode_id for r in w.ns.gc_records()] == [s.inode.id]
    assert w.ns.sweep_expired_sessions(w.clock.now) == 0


def test_expired_append_session_keeps_file(w: World) -> None:
    w.ns.create("/log")
    s = w.ns.open_write("/log", pb.APPEND)
    assert w.ns.sweep_expired_sessions(w.clock.now + 61 * 10**9) == 1
    assert w.ns.stat("/log").id == s.inode.id
    assert w.ns.gc_records() == []


def test_close_write_is_idempotent_for_retries(ns: Namespace) -> None:
    """A CloseWrite whose reply was lost is retried: the retry gets the first close's answer."""
    ns.mkdir("/d")
    s1 = ns.open_write("/d/f", pb.REPLACE)
    first = ns.close_write(s1.session_id, 42)
    again = ns.close_write(s1.session_id, 42)
    assert again == first and ns.stat("/d/f").id == first.id and ns.stat("/d/f").length == 42
    assert ns.gc_records() == [], "a replayed close must not collect anything"
    expect(Reason.SESSION_EXPIRED, ns.close_write, s1.session_id, 42, commit=False)  # contradicts it
    expect(Reason.SESSION_EXPIRED, ns.renew_session, s1.session_id)
    # a close that failed fails the same way when retried
    s2 = ns.open_write("/d/g", pb.CREATE_NEW)
    ns.create("/d/g")
    expect(Reason.EXISTS, ns.close_write, s2.session_id, 1)
    expect(Reason.EXISTS, ns.close_write, s2.session_id, 1)
    assert [r.inode_id for r in ns.gc_records()] == [s2.inode.id]
    assert ns.sessions() == []
    assert ns.sweep_expired_sessions(now_ns=2**62) == 0  # forgetting closes ends no session


def test_second_append_session_waits_for_the_first(ns: Namespace) -> None:
    """Concurrent appenders would overwrite each other's bytes: the second is told to retry."""
    ns.mkdir("/d")
    first = ns.open_write("/d/log", pb.APPEND)
    expect(Reason.BUSY, ns.open_write, "/d/log", pb.APPEND)
    replacing = ns.open_write("/d/log", pb.REPLACE)  # a whole new file does not conflict
    ns.close_write(first.session_id, 10)
    second = ns.open_write("/d/log", pb.APPEND)
    assert second.inode.length == 10
    ns.close_write(second.session_id, 25)
    ns.close_write(replacing.session_id, 3)
    assert ns.stat("/d/log").length == 3


# ---- several metaservers on one etcd ----


@pytest.mark.parametrize("meta_backend", ["etcd"])
def test_two_metaservers_race_on_one_directory(open_store: Callable[..., Store]) -> None:
    """Creates, renames and exclusive creates from two namespaces at once: each lands exactly once."""
    import threading

    from chainfs.metaserver.ns_check import check_namespace

    a, b = World(open_store), World(open_store)  # b loads the chains a registered
    a.ns.mkdir("/d")
    errors: list[BaseException] = []
    won: list[int] = []

    def work(ns: Namespace, t: int) -> None:
        try:
            for i in range(15):
                ns.create(f"/d/f-{t}-{i}")
                if i % 3 == 0:
                    ns.rename(f"/d/f-{t}-{i}", f"/d/r-{t}-{i}")
                try:
                    ns.create(f"/d/x-{i}", exclusive=True)
                    won.append(i)
                except ChainfsError as exc:
                    assert exc.reason == Reason.EXISTS
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ns, t)) for t, ns in enumerate([a.ns, b.ns, a.ns, b.ns])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    entries, more = a.ns.list("/d", limit=config.MAX_LIST_LIMIT)
    got = sorted(e.name for e in entries)
    want = sorted([f"f-{t}-{i}" for t in range(4) for i in range(15) if i % 3]
                  + [f"r-{t}-{i}" for t in range(4) for i in range(15) if i % 3 == 0]
                  + [f"x-{i}" for i in range(15)])
    assert got == want and not more
    assert sorted(won) == list(range(15))  # every exclusive create won exactly once
    assert len({e.inode.id for e in entries}) == len(entries)
    assert names(b.ns, "/d") == names(a.ns, "/d")
    assert list(check_namespace(a.ns).problems) == []


def test_set_attr_changes_only_given_fields_and_survives_reopen(w: World) -> None:
    w.ns.create("/f")
    w.clock.now += 5
    inode = w.ns.set_attr("/f", mode=0o4750, uid=1234, gid=99, atime_ns=111, mtime_ns=222)
    assert (inode.mode, inode.uid, inode.gid, inode.atime_ns, inode.mtime_ns) == (0o4750, 1234, 99, 111, 222)
    assert inode.ctime_ns == w.clock.now
    w.reopen()
    again = w.ns.set_attr("/f", mode=0o600)
    assert (again.mode, again.uid, again.gid, again.mtime_ns) == (0o600, 1234, 99, 222)
    d = w.ns.mkdir("/d")
    assert not d.HasField("uid")
    assert w.ns.set_attr("/d", gid=7).gid == 7


def test_set_attr_length_and_bad_values(w: World) -> None:
    w.ns.create("/f")
    w.clock.now += 10
    grown = w.ns.set_attr("/f", length=5000)
    assert grown.length == 5000 and grown.mtime_ns == w.clock.now
    assert w.ns.set_attr("/f", length=3).length == 3
    w.ns.mkdir("/d")
    with pytest.raises(ChainfsError) as err:
        w.ns.set_attr("/d", length=0)
    assert err.value.reason == Reason.IS_A_DIRECTORY
    for bad in ({"mode": 0o10000}, {"length": -1}, {"mtime_ns": -5}):
        with pytest.raises(ChainfsError) as err:
            w.ns.set_attr("/f", **bad)
        assert err.value.reason == Reason.INVALID_ARGUMENT
    with pytest.raises(ChainfsError) as err:
        w.ns.set_attr("/missing", mode=0o644)
    assert err.value.reason == Reason.NOT_FOUND


def test_space_counts_each_disk_once(w: World) -> None:
    for node_id in sorted(w.cluster.nodes):
        targets = [pb.TargetInfo(target_id=t.target_id, node_id=node_id, local_state=pb.UPTODATE,
                                 capacity_bytes=1000, free_bytes=400, device=node_id % 2)
                   for t in w.cluster.targets.values() if t.node_id == node_id]
        w.cluster.heartbeat(node_id, "", targets, 0)
    space = w.cluster.space()
    # Three nodes on one host (127.0.0.1): devices 0 and 1, so two disks.
    assert (space.capacity_bytes, space.free_bytes, space.disks, space.replication) == (2000, 800, 2, 3)


@pytest.mark.parametrize("meta_backend", ["etcd"])
def test_write_session_lease_is_an_etcd_lease(open_store: Callable[..., Store]) -> None:
    """The namespace's clock stands still: only etcd's lease can expire the session, and RenewSession
    keeps it alive."""
    import time

    from chainfs.cluster.process import wait_for

    w = World(open_store)
    ns = Namespace(w.store, w.cluster, replication=3, lease_s=1, clock_ns=w.clock)
    kept = ns.open_write("/kept", pb.REPLACE)
    lapsing = ns.open_write("/lapsing", pb.REPLACE)
    deadline = time.monotonic() + 2.5  # longer than the 1 s lease: renewals carry it
    while time.monotonic() < deadline:
        ns.renew_session(kept.session_id)
        time.sleep(0.2)
    wait_for(lambda: ns.sweep_expired_sessions() >= 1 or lapsing.session_id not in
             [r.session_id for r in ns.sessions()], 10, "etcd to let the unrenewed session lapse")
    assert [r.session_id for r in ns.sessions()] == [kept.session_id]
    assert [r.inode_id for r in ns.gc_records()] == [lapsing.inode.id]
    expect(Reason.SESSION_EXPIRED, ns.close_write, lapsing.session_id, 0)
    assert ns.close_write(kept.session_id, 0).id == kept.inode.id
    assert ns.stat("/kept").id == kept.inode.id


@pytest.mark.parametrize("meta_backend", ["etcd"])
def test_two_metaservers_never_open_two_appends_of_one_file(open_store: Callable[..., Store]) -> None:
    import threading

    a, b = World(open_store), World(open_store)
    a.ns.create("/log")
    for _ in range(8):
        start = threading.Barrier(2)
        won: list[pb.WriteSession] = []

        def try_append(ns: Namespace) -> None:
            start.wait()
            try:
                won.append(ns.open_write("/log", pb.APPEND))
            except ChainfsError as exc:
                assert exc.reason == Reason.BUSY

        threads = [threading.Thread(target=try_append, args=(ns,)) for ns in (a.ns, b.ns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(won) == 1
        a.ns.close_write(won[0].session_id, won[0].inode.length + 1)
    assert a.ns.stat("/log").length == 8


@pytest.mark.parametrize("meta_backend", ["etcd"])
def test_etcd_stat_is_one_round_trip_and_sees_other_metaservers(open_store: Callable[..., Store]) -> None:
    a, b = World(open_store), World(open_store)
    old = a.ns.create("/d/e/f", parents=True)
    assert a.ns.stat("/d/e/f").id == old.id  # walks once, remembering the dentries
    client = a.store.client  # type: ignore[attr-defined]
    calls: list[str] = []
    range_, txn = client.range, client.txn
    client.range = lambda *x, **k: (calls.append("range"), range_(*x, **k))[1]
    client.txn = lambda *x, **k: (calls.append("txn"), txn(*x, **k))[1]
    assert a.ns.stat("/d/e/f").id == old.id
    assert calls == ["txn"]
    b.ns.rename("/d/e/f", "/d/e/g")  # another metaserver moves things under a's cache
    new = b.ns.create("/d/e/f")
    assert a.ns.stat("/d/e/f").id == new.id and a.ns.stat("/d/e/g").id == old.id
    b.ns.remove("/d/e", recursive=True)
    expect(Reason.NOT_FOUND, a.ns.stat, "/d/e/f")
    expect(Reason.NOT_FOUND, a.ns.stat, "/d/e")
    assert a.ns.stat("/d").type == pb.DIRECTORY
