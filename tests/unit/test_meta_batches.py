"""Batched namespace calls (stat_many, open_write_many, close_write_many) on each real backend."""

from __future__ import annotations

from typing import Callable

import pytest

from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.store import P_SESSION, Store
from chainfs.proto import meta_pb2 as pb
from test_meta_namespace import World  # noqa: F401 - the shared fixture world


@pytest.fixture
def w(open_store: Callable[..., Store]) -> World:
    return World(open_store)


def reasons(results: list) -> list:
    return [r.reason if isinstance(r, ChainfsError) else None for r in results]


def test_stat_many_answers_each_path_like_stat(w: World) -> None:
    ns = w.ns
    ns.mkdir("/a/b", parents=True)
    f = ns.create("/a/b/f")
    ns.create("/a/file")
    results = ns.stat_many(["/a/b/f", "/a/b/missing", "/a/b", "/nope/x", "/a/file/x", "/", "", "/a/../../x"])
    assert results[0] == f and results[0].layout.chains
    assert results[2].type == pb.DIRECTORY and results[5].id == 1
    assert reasons(results) == [None, Reason.NOT_FOUND, None, Reason.NOT_FOUND, Reason.NOT_A_DIRECTORY, None,
                                Reason.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT]
    assert "/a/b/missing" in results[1].message and "/a/file/x" in results[4].message
    assert ns.stat_many([]) == []


def test_open_and_close_many_make_each_file_visible_whole_at_close(w: World) -> None:
    ns = w.ns
    ns.create("/kv/old", parents=True)
    paths = ["/kv/x/1", "/kv/x/2", "/kv/old"]
    sessions = ns.open_write_many(paths, pb.REPLACE, parents=True, client_id="c")
    assert all(isinstance(s, pb.WriteSession) for s in sessions)
    assert len({s.inode.id for s in sessions}) == 3
    assert reasons(ns.stat_many(paths[:2])) == [Reason.NOT_FOUND] * 2  # invisible until closed
    old_id = ns.stat("/kv/old").id
    closed = ns.close_write_many([(s.session_id, 10 + k, True) for k, s in enumerate(sessions)])
    assert [c.length for c in closed] == [10, 11, 12]
    assert [i.id for i in ns.stat_many(paths)] == [s.inode.id for s in sessions]
    assert old_id in {r.inode_id for r in ns.gc_records()}  # the replaced file went to GC
    # A retried close (reply lost) gets the same answers.
    again = ns.close_write_many([(s.session_id, 10 + k, True) for k, s in enumerate(sessions)])
    assert [c.id for c in again] == [c.id for c in closed]


def test_open_many_errors_are_per_path_and_change_nothing(w: World) -> None:
    ns = w.ns
    ns.mkdir("/d/sub", parents=True)
    ns.create("/d/taken")
    ns.create("/file")
    before_sessions = len(list(w.store.values(P_SESSION)))
    results = ns.open_write_many(["/d/sub", "/d/taken", "/file/x/y", "/d/new", "/", ""], pb.CREATE_NEW,
                                 parents=True)
    assert reasons(results) == [Reason.IS_A_DIRECTORY, Reason.EXISTS, Reason.NOT_A_DIRECTORY, None,
                                Reason.IS_A_DIRECTORY, Reason.INVALID_ARGUMENT]
    assert len(list(w.store.values(P_SESSION))) == before_sessions + 1
    with pytest.raises(ChainfsError) as err:
        ns.open_write_many(["/d/a"], pb.APPEND)
    assert err.value.reason == Reason.INVALID_ARGUMENT


def test_failed_open_rolls_back_the_parents_it_made(w: World) -> None:
    """A path whose open fails must not leave directories made for it behind."""
    ns = w.ns
    ns.mkdir("/d/x", parents=True)
    # /d/x/deep/file would create /d/x/deep; CREATE_NEW of an existing file fails later: use a dir.
    results = ns.open_write_many(["/new/a/b", "/d/x"], pb.REPLACE, parents=True)
    assert reasons(results) == [None, Reason.IS_A_DIRECTORY]
    ns.close_write_many([(results[0].session_id, 0, False)])
    assert ns.stat("/new/a").type == pb.DIRECTORY  # the good path's parents stay
    bad = ns.open_write_many(["/made/for/bad", "/made/for/bad"], pb.REPLACE, parents=True,
                             layout=pb.Layout(chunk_size=3))
    assert reasons(bad) == [Reason.INVALID_ARGUMENT] * 2
    with pytest.raises(ChainfsError) as err:
        ns.stat("/made")
    assert err.value.reason == Reason.NOT_FOUND


def test_close_many_mixes_commit_abandon_conflict_and_unknown(w: World) -> None:
    ns = w.ns
    a, b, c = ns.open_write_many(["/m/a", "/m/b", "/m/c"], pb.CREATE_NEW, parents=True)
    ns.create("/m/c")  # appears during the write: c's CREATE_NEW fails at close
    results = ns.close_write_many([(a.session_id, 5, True), (b.session_id, 5, False), (c.session_id, 5, True),
                                   ("9" * 32, 1, True)])
    assert reasons(results) == [None, None, Reason.EXISTS, Reason.SESSION_EXPIRED]
    assert ns.stat("/m/a").length == 5
    assert reasons(ns.stat_many(["/m/b"])) == [Reason.NOT_FOUND]
    garbage = {r.inode_id for r in ns.gc_records()}
    assert b.inode.id in garbage and c.inode.id in garbage and a.inode.id not in garbage


def test_close_many_sweeps_an_expired_session_and_keeps_the_others(w: World) -> None:
    ns = w.ns
    (early,) = ns.open_write_many(["/e/early"], pb.REPLACE, parents=True)
    w.clock.now += 61 * 10**9  # past early's 60 s lease
    (late,) = ns.open_write_many(["/e/late"], pb.REPLACE, parents=True)
    results = ns.close_write_many([(early.session_id, 1, True), (late.session_id, 2, True)])
    assert reasons(results) == [Reason.SESSION_EXPIRED, None]
    assert early.inode.id in {r.inode_id for r in ns.gc_records()}
    assert ns.stat("/e/late").length == 2 and ns.sessions() == []
