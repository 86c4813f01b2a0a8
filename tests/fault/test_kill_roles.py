"""SIGKILL the head, then a middle node, then the tail of a chain under a recorded write load.

After each kill: the load keeps being acknowledged (chain reconfigured around the dead node), the
node restarts and resyncs, every acknowledged write reads back from every replica, fsck finds all
replicas equal, and the register histories recorded meanwhile are linearizable.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb

from tests.fault.harness import WAIT, Load, make_cluster, node_index, the_chain, wait_fsck_clean, wait_state

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with make_cluster(tmp_path_factory.mktemp("roles") / "c") as c:
        yield c


@pytest.mark.parametrize("role", [0, 1, 2], ids=["head", "middle", "tail"])
def test_kill_under_load(fault_cluster: LocalCluster, role: int) -> None:
    cluster = fault_cluster
    cluster.wait_healthy(WAIT)
    victim = the_chain(cluster).targets[role].node_id
    index = node_index(cluster, victim)
    load = Load(cluster).start()
    try:
        load.wait_acked(3)
        cluster.kill_storage(index)
        wait_state(cluster, victim, mpb.OFFLINE)
        load.wait_acked(3)  # the shortened chain takes writes
        cluster.restart_storage(index)
        cluster.wait_healthy(WAIT)
        load.wait_acked(3)  # and so does the chain with the resynced node back at its tail
    finally:
        load.stop()
    assert the_chain(cluster).targets[-1].node_id == victim  # it came back at the tail
    load.check_acked(replicas=3)
    wait_fsck_clean(cluster)
    load.check_linearizable()
