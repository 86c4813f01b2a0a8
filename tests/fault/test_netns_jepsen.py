"""Jepsen-style faults between hosts: every server in its own network namespace (9 hosts: 3 etcd
members, 3 metaservers, 3 storage nodes), links cut with iptables while a recorded load runs.

After each fault heals: every acknowledged write reads back from every replica, fsck is clean, and
the register histories (tests/linearizability.py) linearize. Where a node is cut from the manager,
a probe holding the routing from before the cut checks that the node stops serving (reads and
stale reads refused) once its lease ran out, and never serves again while fenced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.client.rpc.storage_client import ReadSpec
from chainfs.cluster import LocalCluster
from chainfs.cluster.etcd import etcd_binary
from chainfs.cluster.netns import netns_supported
from chainfs.cluster.process import wait_for
from chainfs.common.dataconn import local_host_id
from chainfs.proto import meta_pb2 as mpb

from tests.grants import grant
from tests.fault.harness import (
    REG_BYTES, T, WAIT, Load, client, make_cluster, node_index, the_chain, wait_fsck_clean, wait_state,
)

NO_NETNS = netns_supported()
pytestmark = [
    pytest.mark.fault,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (scripts/install_sysdeps.sh)"),
    pytest.mark.skipif(NO_NETNS is not None, reason=f"no network namespaces: {NO_NETNS}"),
]
META_TIMEOUT = 2.0  # clients leave a metaserver that stopped answering after this


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("netns") / "c"
    with make_cluster(root, meta_backend="etcd", metaservers=3, etcd_members=3, netns=True) as cluster:
        yield cluster


@pytest.fixture
def cluster(net: LocalCluster) -> Iterator[LocalCluster]:
    assert net.lab is not None
    net.wait_healthy(WAIT)
    # separate hosts: no storage node looks local to us (no short-circuit read bypasses a cut link)
    assert all(n.host_id and n.host_id != local_host_id() for n in net.routing().nodes)
    yield net
    net.lab.heal()


def finish(cluster: LocalCluster, load: Load) -> None:
    load.check_acked(replicas=3)
    wait_fsck_clean(cluster)
    load.check_linearizable()


def frozen_probe(cluster: LocalCluster) -> ChainClient:
    """A client that keeps the routing it has now: it goes on talking to the nodes of this table."""
    probe = ChainClient(cluster.address, meta_timeout=META_TIMEOUT, retry_deadline=0.5)
    probe.routing.table()
    probe.routing.refresh = probe.routing.table  # type: ignore[method-assign]
    return probe


def serves(probe: ChainClient, inode: mpb.Inode, replica: int) -> bool:
    """Whether the node at `replica` of the probe's table answers a read (committed bytes, which a
    node cut from the manager may hold stale: so it must refuse once fenced)."""
    chain = inode.layout.chains[0]
    try:
        probe.storage.read([ReadSpec(chain, inode.id, 0, 0, REG_BYTES, replica=replica)])
        return True
    except OSError:
        return False


def test_partition_chain_head_from_manager_and_successors(cluster: LocalCluster) -> None:
    lab = cluster.lab
    assert lab is not None
    chain = the_chain(cluster)
    head = node_index(cluster, chain.targets[0].node_id)
    successors = [node_index(cluster, t.node_id) for t in chain.targets[1:]]
    load = Load(cluster, meta_timeout=META_TIMEOUT).start()
    try:
        load.wait_acked(3)
        probe = frozen_probe(cluster)
        reg = load.reg_inodes[0]
        grant(cluster, probe, reg.id)  # it reads the register's chunk straight from the nodes
        wait_for(lambda: serves(probe, reg, 0), T, "the head to serve before the cut", interval=0.05)  # non-vacuous
        lab.cut(cluster.host_index("storage", head),
                [cluster.host_index("meta", i) for i in range(3)]
                + [cluster.host_index("storage", i) for i in successors])
        cut_at = time.monotonic()
        # fenced once its lease (T/2 from its last answered heartbeat) ran out, and it stays so
        wait_for(lambda: not serves(probe, reg, 0), T, "the cut-off head to fence itself", interval=0.05)
        wait_state(cluster, chain.targets[0].node_id, mpb.OFFLINE)
        load.wait_acked(3)  # the chain went on without it
        while time.monotonic() - cut_at < 2 * T:
            assert not serves(probe, reg, 0), "a fenced head served"
        lab.heal()
        cluster.wait_healthy(WAIT)  # it resynced and serves again, at the tail
        load.wait_acked(3)
    finally:
        load.stop()
    assert the_chain(cluster).targets[-1].node_id == chain.targets[0].node_id
    finish(cluster, load)


def test_partition_leading_metaserver(cluster: LocalCluster) -> None:
    lab = cluster.lab
    assert lab is not None
    leader = cluster.leader_meta(timeout=WAIT)
    load = Load(cluster, meta_timeout=META_TIMEOUT).start()
    try:
        load.wait_acked(3)
        lab.isolate([cluster.host_index("meta", leader)])
        new_leader = cluster.leader_meta(timeout=WAIT, exclude=leader)
        log = Path(cluster.state.metas[leader].log)
        wait_for(lambda: "no longer the cluster manager" in log.read_text(errors="replace"), WAIT,
                 "the cut-off metaserver to stand down")
        load.wait_acked(3)
        victim = the_chain(cluster).targets[-1].node_id  # the new manager still reconfigures chains
        cluster.kill_storage(node_index(cluster, victim))
        wait_state(cluster, victim, mpb.OFFLINE)
        cluster.restart_storage(node_index(cluster, victim))
        lab.heal()
        cluster.wait_healthy(WAIT)
        assert cluster.leader_meta(timeout=WAIT) == new_leader  # the old one came back as a standby
        load.wait_acked(3)
    finally:
        load.stop()
    finish(cluster, load)


def test_isolate_etcd_minority_then_majority(cluster: LocalCluster) -> None:
    lab = cluster.lab
    assert lab is not None
    load = Load(cluster, meta_timeout=META_TIMEOUT).start()
    c = client(cluster, META_TIMEOUT)
    try:
        load.wait_acked(3)
        lab.isolate([cluster.host_index("etcd", 0)])  # a minority: nothing stops
        load.wait_acked(3)
        c.meta.mkdir("/minority/ok", parents=True)
        lab.heal()
        cluster.wait_healthy(WAIT)
        lab.isolate([cluster.host_index("etcd", 1), cluster.host_index("etcd", 2)])  # no quorum left
        short = ChainClient(cluster.address, meta_timeout=META_TIMEOUT, retry_deadline=1.0)
        for n in range(3):  # no metadata change can be acknowledged without a quorum
            with pytest.raises(OSError):
                short.meta.mkdir(f"/majority/d{n}", parents=True)
        lab.heal()
        cluster.wait_healthy(WAIT)
        load.wait_acked(3)
    finally:
        load.stop()
    assert c.meta.stat("/minority/ok").type == mpb.DIRECTORY
    finish(cluster, load)


def test_kill_leading_metaserver_under_load(cluster: LocalCluster) -> None:
    leader = cluster.leader_meta(timeout=WAIT)
    load = Load(cluster, meta_timeout=META_TIMEOUT).start()
    try:
        load.wait_acked(3)
        cluster.kill_meta(leader)
        cluster.leader_meta(timeout=WAIT, exclude=leader)
        load.wait_acked(3)
        cluster.restart_meta(leader)
        cluster.wait_healthy(WAIT)
        load.wait_acked(3)
    finally:
        load.stop()
    finish(cluster, load)


def test_added_latency_where_the_kernel_has_netem(cluster: LocalCluster) -> None:
    lab = cluster.lab
    assert lab is not None
    if not lab.delay(cluster.host_index("storage", 0), 30):
        pytest.skip("this kernel has no sch_netem: latency faults are unavailable here")
    c = client(cluster, META_TIMEOUT)
    c.write_file("/slow/f", b"x" * 10_000)
    assert c.read_file("/slow/f") == b"x" * 10_000
