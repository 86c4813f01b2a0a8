"""Failure detection: 3FS's state table, the manager applying it, namespace checks and GC records."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainfs.metaserver.chain_states import TargetView, next_chain
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.metaserver.gc import GarbageCollector
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.ns_check import check_namespace
from chainfs.metaserver.store import MetaStore, dentry_key
from chainfs.proto import meta_pb2 as pb

S, Y, W, L, O = pb.SERVING, pb.SYNCING, pb.WAITING, pb.LASTSRV, pb.OFFLINE
UP, ON, OFF, UNK = pb.UPTODATE, pb.ONLINE, pb.OFFLINE_LOCAL, pb.LOCAL_STATE_UNSPECIFIED


def chain(*targets: tuple[int, int]) -> list[TargetView]:
    """(public, local) per target; target ids 1, 2, 3, ... in chain order."""
    return [TargetView(i + 1, public, local) for i, (public, local) in enumerate(targets)]


@pytest.mark.parametrize("local, public, pred_serving, expected", [
    (UP, S, True, S), (UP, Y, True, S), (UP, W, True, W), (UP, L, False, S), (UP, O, True, W),
    (ON, S, True, S), (ON, Y, True, Y), (ON, Y, False, W), (ON, W, True, Y), (ON, W, False, W),
    (ON, L, False, S), (ON, O, True, W),
    (OFF, Y, True, O), (OFF, W, True, O), (OFF, L, False, L), (OFF, O, True, O),
])
def test_table_rows(local: int, public: int, pred_serving: bool, expected: int) -> None:
    """Each row of the 3FS table, the target placed after a serving (or a dead) predecessor."""
    pred = (S, UP) if pred_serving else (O, OFF)
    result = dict(next_chain(chain(pred, (public, local))))
    assert result[2] == expected


def test_dead_serving_target_moves_to_the_end() -> None:
    assert next_chain(chain((S, UP), (S, OFF), (S, UP))) == [(1, S), (3, S), (2, O)]
    assert next_chain(chain((S, OFF), (S, UP), (S, UP))) == [(2, S), (3, S), (1, O)]


def test_only_the_last_serving_target_becomes_lastsrv() -> None:
    assert next_chain(chain((S, OFF), (O, OFF), (O, OFF))) == [(1, L), (2, O), (3, O)]
    # all serving targets die at once: exactly one lastsrv
    assert next_chain(chain((S, OFF), (S, OFF), (S, OFF))) == [(1, L), (2, O), (3, O)]
    # returning non-lastsrv targets wait: the chain does not serve without the lastsrv
    step = next_chain(chain((L, OFF), (O, ON), (O, ON)))
    assert step == [(2, W), (3, W), (1, L)]
    assert next_chain([TargetView(t, s, ON if t != 1 else OFF) for t, s in step]) == step
    # the lastsrv returns: it serves, then one of the others syncs from it
    step = next_chain([TargetView(2, W, ON), TargetView(3, W, ON), TargetView(1, L, ON)])
    assert step == [(1, S), (2, Y), (3, W)]


def test_one_syncing_target_per_chain() -> None:
    step = next_chain(chain((S, UP), (W, ON), (W, ON)))
    assert step == [(1, S), (2, Y), (3, W)]
    step = next_chain([TargetView(t, s, ON if s != S else UP) for t, s in step])
    assert step == [(1, S), (2, Y), (3, W)]
    step = next_chain([TargetView(1, S, UP), TargetView(2, Y, UP), TargetView(3, W, ON)])
    assert step == [(1, S), (2, S), (3, Y)]


def test_unknown_local_state_changes_nothing() -> None:
    views = chain((S, UNK), (S, UNK), (O, UNK))
    assert next_chain(views) == [(1, S), (2, S), (3, O)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_manager_detects_silent_nodes_and_takes_returners_through_sync(tmp_path: Path) -> None:
    clock = Clock()
    with MetaStore(tmp_path / "m") as store:
        cm = ClusterManager(store, replication=3, heartbeat_timeout=2.0, clock=clock)
        nodes = [cm.register(0, f"127.0.0.1:{7000 + n}", [(0, f"/t{n}")]) for n in range(3)]
        ids = {node_id: targets[0] for node_id, targets, _ in nodes}

        def beat(node_id: int, local: int = UP) -> None:
            cm.heartbeat(node_id, "", [pb.TargetInfo(target_id=ids[node_id], local_state=local)], 0)

        def public() -> list[tuple[int, int]]:
            return [(t.target_id, t.state) for t in cm.chain_info(1).targets]

        for n in ids:
            beat(n)
        assert cm.check_chains() == []
        version = cm.chain_info(1).version
        clock.now += 1.5
        beat(1)
        beat(2)
        clock.now += 1.0  # node 3 silent for 2.5 s > T
        assert cm.check_chains() == [1]
        assert public() == [(1, S), (2, S), (3, O)] and cm.chain_info(1).version == version + 1
        beat(3, ON)  # it returns
        cm.check_chains()
        assert public()[-1] == (3, W)
        cm.check_chains()
        assert public()[-1] == (3, Y)
        beat(3, UP)  # its predecessor finished the sync
        cm.check_chains()
        assert public() == [(1, S), (2, S), (3, S)]


def test_manager_restart_grace(tmp_path: Path) -> None:
    clock = Clock()
    with MetaStore(tmp_path / "m") as store:
        cm = ClusterManager(store, replication=1, heartbeat_timeout=2.0, clock=clock)
        cm.register(0, "127.0.0.1:7000", [(0, "/t")])
        cm2 = ClusterManager(store, replication=1, heartbeat_timeout=2.0, clock=clock)  # a restart
        assert cm2.check_chains() == []  # nobody heard from yet, but within the grace period
        clock.now += 3.0
        assert cm2.check_chains() == [1]
        assert cm2.chain_info(1).targets[0].state == L  # the only serving target: lastsrv


def test_namespace_check_and_gc_records(tmp_path: Path) -> None:
    with MetaStore(tmp_path / "m") as store:
        cm = ClusterManager(store, replication=1, heartbeat_timeout=2.0)
        cm.register(0, "127.0.0.1:1", [(0, "/t")])
        ns = Namespace(store, cm, replication=1)
        ns.mkdir("/a")
        session = ns.open_write("/a/f", pb.REPLACE)
        ns.close_write(session.session_id, 10)
        reply = check_namespace(ns, {1})
        assert list(reply.problems) == [] and [f.id for f in reply.files] == [session.inode.id]
        ns.remove("/a/f")
        assert list(check_namespace(ns, {1}).pending_inodes) == [session.inode.id]
        # a dangling dentry and an orphan directory are reported
        txn = store.txn()
        txn.put(dentry_key(1, "ghost"), (999).to_bytes(8, "big"))
        txn.delete(dentry_key(1, "a"))
        store.commit(txn)
        problems = " | ".join(check_namespace(ns, {1}).problems)
        assert "missing inode 999" in problems and "orphan inode" in problems
        # the collector keeps a record whose chain cannot be reached, and paces itself
        gc = GarbageCollector(ns, cm, rate=1000, grace=0.0)
        assert gc.run_once() == 0 and [r.inode_id for r in ns.gc_records()] == [session.inode.id]
        gc.stop()


def _one_removed_file(store: MetaStore) -> tuple[ClusterManager, Namespace, int]:
    """A namespace with one chain whose only file was written and removed: one GC record."""
    cm = ClusterManager(store, replication=1, heartbeat_timeout=2.0)
    cm.register(0, "127.0.0.1:1", [(0, "/t")])
    ns = Namespace(store, cm, replication=1)
    session = ns.open_write("/f", pb.REPLACE)
    ns.close_write(session.session_id, 10)
    ns.remove("/f")
    return cm, ns, session.inode.id


def test_gc_waits_out_its_grace_period(tmp_path: Path) -> None:
    """A replaced file's chunks stay for `grace` seconds, for readers that still hold the old inode."""
    with MetaStore(tmp_path / "m") as store:
        cm, ns, inode_id = _one_removed_file(store)
        [record] = ns.gc_records()
        now = [record.created_ns + 10 * 10**9]
        gc = GarbageCollector(ns, cm, rate=1000, grace=30.0, wall_ns=lambda: now[0])
        removed: list[int] = []
        gc._remove_on_chain = lambda chain_id, inode_id: removed.append(inode_id) is None  # type: ignore[method-assign]
        assert gc.run_once() == 0 and removed == []
        now[0] = record.created_ns + 31 * 10**9
        assert gc.run_once() == 1 and removed == [inode_id] and ns.gc_records() == []
        gc.stop()


def test_gc_keeps_a_record_rewritten_during_its_pass(tmp_path: Path) -> None:
    """The collector deletes only the records it processed, not a newer version of one."""
    import dataclasses

    from chainfs.metaserver.store import gc_key

    with MetaStore(tmp_path / "m") as store:
        _, ns, _ = _one_removed_file(store)
        [processed] = ns.gc_records()
        txn = store.txn()  # rewritten meanwhile, as an append session outliving its file does
        txn.put(gc_key(processed.inode_id), dataclasses.replace(processed, created_ns=processed.created_ns + 1).to_bytes())
        store.commit(txn)
        ns.remove_gc_records([processed])
        assert [r.inode_id for r in ns.gc_records()] == [processed.inode_id]
        ns.remove_gc_records(ns.gc_records())
        assert ns.gc_records() == []
