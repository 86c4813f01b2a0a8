"""Cluster manager against a real RocksDB: registration, chain building, routing versions, heartbeats."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.metaserver.layout import pick_chains
from chainfs.metaserver.store import MetaStore
from chainfs.proto import meta_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path):
    s = MetaStore(tmp_path / "meta")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def manager(store: MetaStore, clock: Clock, replication: int = 3) -> ClusterManager:
    return ClusterManager(store, replication=replication, heartbeat_timeout=5.0, clock=clock)


def add_node(cm: ClusterManager, n: int, targets: int = 4) -> tuple[int, list[int], pb.RoutingTable]:
    return cm.register(0, f"127.0.0.1:{7000 + n}", [(0, f"/data/n{n}/t{t}") for t in range(targets)])


def expect(r: Reason, fn, *args, **kwargs) -> ChainfsError:
    with pytest.raises(ChainfsError) as ei:
        fn(*args, **kwargs)
    assert ei.value.reason == r, ei.value.message
    return ei.value


def test_chains_3_nodes_x_4_targets(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock)
    n1, t1, r1 = add_node(cm, 1)
    n2, t2, r2 = add_node(cm, 2)
    assert (n1, n2) == (1, 2) and t1 == [1, 2, 3, 4] and t2 == [5, 6, 7, 8]
    assert not r2.chains  # two nodes cannot hold a chain of 3
    _, _, routing = add_node(cm, 3)
    assert len(routing.chains) == 4 and routing.replication == 3
    heads = Counter()
    used: set[int] = set()
    for chain in routing.chains:
        assert chain.version == 1 and len(chain.targets) == 3
        nodes = [t.node_id for t in chain.targets]
        assert len(set(nodes)) == 3  # distinct nodes
        assert all(t.state == pb.SERVING and t.chain_id == chain.chain_id for t in chain.targets)
        used.update(t.target_id for t in chain.targets)
        heads[nodes[0]] += 1
    assert len(used) == 12
    assert set(heads) == {1, 2, 3} and max(heads.values()) == 2  # heads spread over nodes
    assert [n.node_id for n in routing.nodes] == [1, 2, 3] and all(n.alive for n in routing.nodes)
    assert cm.chain_lengths() == [(1, 3), (2, 3), (3, 3), (4, 3)]


def test_uneven_nodes_pick_the_fullest(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock)
    add_node(cm, 1, targets=2)
    add_node(cm, 2, targets=2)
    add_node(cm, 3, targets=1)
    assert len(cm.chains) == 1  # one target from each of nodes 1, 2, 3
    add_node(cm, 4, targets=3)  # free now: node 1: 1, node 2: 1, node 4: 3
    routing = cm.routing_table()
    assert len(routing.chains) == 2
    for chain in routing.chains:
        assert len({t.node_id for t in chain.targets}) == 3
    assert {t.node_id for t in routing.chains[1].targets} == {1, 2, 4}
    free = [t for t in cm.targets.values() if t.chain_id == 0]
    assert [t.node_id for t in free] == [4, 4]  # one node left: no more chains


def test_replication_one_and_late_nodes(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock, replication=1)
    _, _, routing = add_node(cm, 1, targets=2)
    assert [len(c.targets) for c in routing.chains] == [1, 1]


def test_dead_nodes_get_no_new_chains(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock)
    add_node(cm, 1)
    clock.now += 10  # node 1 missed its heartbeats
    add_node(cm, 2)
    add_node(cm, 3)
    assert not cm.chains
    assert not cm.routing_table().nodes[0].alive
    version = cm.routing_version
    cm.heartbeat(1, "", [], 0)  # node 1 is back: now three live nodes have free targets
    assert len(cm.chains) == 4 and cm.routing_version == version + 1
    cm.heartbeat(1, "", [], 0)
    assert cm.routing_version == version + 1


def test_routing_version_bumps(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock)
    v0 = cm.routing_version
    assert v0 >= 1
    node, targets, r = add_node(cm, 1)
    assert r.version == v0 + 1
    # same node, same address, same targets: nothing changed
    _, _, r = cm.register(node, "127.0.0.1:7001", [(t, f"/data/n1/t{i}") for i, t in enumerate(targets)])
    assert r.version == v0 + 1
    # address change bumps (register and heartbeat)
    _, _, r = cm.register(node, "127.0.0.1:9999", [])
    assert r.version == v0 + 2
    reply = cm.heartbeat(node, "127.0.0.1:9998", [], r.version)
    assert reply.routing_changed and reply.routing.version == v0 + 3
    assert reply.routing.nodes[0].address == "127.0.0.1:9998"
    add_node(cm, 2)
    add_node(cm, 3)  # chains formed: one bump for the node and its chains together
    assert cm.routing_version == v0 + 5
    changed, table = cm.get_routing(cm.routing_version)
    assert not changed and table is None
    changed, table = cm.get_routing(0)
    assert changed and table is not None and table.version == cm.routing_version


def test_update_chain_bumps_chain_and_routing(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock)
    for n in range(1, 4):
        add_node(cm, n, targets=1)
    chain = cm.chain_info(1)
    order = [t.target_id for t in chain.targets]
    v = cm.routing_version
    head = order[0]
    updated = cm.update_chain(1, order=order[1:] + [head], states={head: pb.OFFLINE})
    assert updated.version == 2 and cm.routing_version == v + 1
    assert [t.target_id for t in updated.targets] == order[1:] + [head]
    assert updated.targets[-1].state == pb.OFFLINE
    again = cm.update_chain(1, states={head: pb.SYNCING})
    assert again.version == 3 and again.targets[-1].state == pb.SYNCING
    expect(Reason.INVALID_ARGUMENT, cm.update_chain, 1, order=[head])
    expect(Reason.INVALID_ARGUMENT, cm.update_chain, 1, states={999: pb.OFFLINE})
    expect(Reason.NOT_FOUND, cm.update_chain, 42)
    # persisted: a fresh manager over the same store sees the same chain
    cm2 = manager(store, clock)
    assert cm2.chain_info(1) == cm.chain_info(1)
    assert cm2.routing_version == cm.routing_version


def test_reregister_keeps_ids_and_survives_reopen(tmp_path: Path, clock: Clock) -> None:
    store = MetaStore(tmp_path / "m")
    cm = manager(store, clock)
    node, targets, _ = add_node(cm, 1)
    add_node(cm, 2)
    add_node(cm, 3)
    version = cm.routing_version
    store.close()
    store = MetaStore(tmp_path / "m")
    try:
        cm = manager(store, clock)
        assert cm.routing_version == version and len(cm.chains) == 4
        again, ids, routing = cm.register(node, "127.0.0.1:7001", [(t, f"/data/n1/t{i}") for i, t in enumerate(targets)])
        assert again == node and ids == targets
        assert routing.version == version and len(routing.chains) == 4
        # a brand-new node gets fresh ids past every id handed out before
        n4, t4, _ = add_node(cm, 4, targets=1)
        assert n4 == 4 and t4 == [13]
        # a target of another node cannot be claimed
        expect(Reason.INVALID_ARGUMENT, cm.register, n4, "127.0.0.1:7004", [(targets[0], "/x")])
        assert cm.targets[targets[0]].node_id == node  # failed register left memory intact
        # ids the manager never handed out (its store was wiped) are accepted; counters skip them
        n, ids, _ = cm.register(50, "127.0.0.1:7050", [(70, "/y"), (0, "/z")])
        assert n == 50 and ids == [70, 71]
        assert add_node(cm, 5, targets=0)[0] == 51
        expect(Reason.INVALID_ARGUMENT, cm.register, 0, "", [])
        expect(Reason.INVALID_ARGUMENT, cm.register, 0, "h:1", [(5, "/a"), (5, "/b")])
    finally:
        store.close()


def test_heartbeat(store: MetaStore, clock: Clock) -> None:
    cm = manager(store, clock)
    expect(Reason.NOT_FOUND, cm.heartbeat, 7, "", [], 0)
    node, targets, routing = add_node(cm, 1, targets=1)
    add_node(cm, 2, targets=1)
    add_node(cm, 3, targets=1)
    reply = cm.heartbeat(node, "", [pb.TargetInfo(target_id=targets[0], local_state=pb.UPTODATE)], 0)
    assert reply.routing_changed and reply.heartbeat_timeout_ms == 5000
    states = {t.target_id: t.local_state for c in reply.routing.chains for t in c.targets}
    assert states[targets[0]] == pb.UPTODATE
    reply = cm.heartbeat(node, "", [], cm.routing_version)
    assert not reply.routing_changed and not reply.HasField("routing")
    clock.now += 6
    cm.heartbeat(node, "", [], cm.routing_version)
    alive = {n.node_id: n.alive for n in cm.routing_table().nodes}
    assert alive == {1: True, 2: False, 3: False}
    assert cm.routing_table().nodes[0].last_heartbeat_ns > 0


def test_pick_chains_rules() -> None:
    layout = pb.Layout(chunk_size=1 << 20, stripe_width=2, replication=3)
    chains = [(1, 3), (2, 2), (3, 3), (4, 3)]
    assert pick_chains(chains, 0, layout, "/f") == [1, 3]  # only chains of length 3
    assert pick_chains(chains, 2, layout, "/f") == [4, 1]  # wraps around
    layout.replication = 5  # none match: any chain
    assert pick_chains(chains, 1, layout, "/f") == [2, 3]
    with pytest.raises(ChainfsError) as ei:
        pick_chains([], 1, layout, "/f")
    assert ei.value.reason == Reason.NO_CHAINS


def test_chains_wait_for_min_nodes_then_spread_over_all(tmp_path) -> None:
    """Nodes arriving one by one with R=2 < N=3: no chain forms until all 3 are alive."""
    from chainfs.metaserver.cluster_manager import ClusterManager
    from chainfs.metaserver.store import MetaStore

    store = MetaStore(str(tmp_path / "db"))
    try:
        cm = ClusterManager(store, replication=2, min_nodes=3)
        for n in range(3):
            _, _, table = cm.register(0, f"127.0.0.1:{7000 + n}", [(0, f"/t{n}a"), (0, f"/t{n}b")])
            assert len(table.chains) == (0 if n < 2 else 3)
        used = [t.node_id for c in table.chains for t in c.targets]
        assert sorted(used) == [1, 1, 2, 2, 3, 3]
    finally:
        store.close()
