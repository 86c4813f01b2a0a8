"""Several metaservers over one etcd: the leading one (cluster manager + GC) SIGKILLed under a
recorded write load. Metadata operations resume within 2 heartbeat timeouts on the others, another
is elected, chains are still reconfigured afterwards (a storage node killed then goes offline and
resyncs), nothing acknowledged is lost, fsck is clean and the register histories linearize."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chainfs.client import ChainClient
from chainfs.cluster.etcd import etcd_binary
from chainfs.cluster.process import wait_for
from chainfs.proto import meta_pb2 as mpb

from tests.fault.harness import T, WAIT, Load, make_cluster, node_index, the_chain, wait_fsck_clean, wait_state

pytestmark = [pytest.mark.fault,
              pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (scripts/install_sysdeps.sh)")]


def test_kill_leading_metaserver_under_load(tmp_path: Path) -> None:
    with make_cluster(tmp_path / "c", meta_backend="etcd", metaservers=3) as cluster:
        assert len(cluster.address.split(",")) == 3
        leader = cluster.leader_meta(timeout=WAIT)
        load = Load(cluster).start()
        probe = ChainClient(cluster.address, retry_deadline=30.0)
        probe.mkdir("/probe")
        try:
            load.wait_acked(3)
            cluster.kill_meta(leader)
            killed = time.monotonic()
            n = 0

            def metadata_works() -> bool:
                nonlocal n
                n += 1
                try:
                    probe.meta.create(f"/probe/p{n}", exclusive=True)
                    return probe.meta.stat(f"/probe/p{n}").type == mpb.FILE
                except OSError:
                    return False

            wait_for(metadata_works, 2 * T, "metadata operations on the remaining metaservers", interval=0.05)
            resumed = time.monotonic() - killed
            assert resumed < 2 * T, resumed
            new_leader = cluster.leader_meta(timeout=WAIT)
            assert new_leader != leader
            load.wait_acked(3)
            # the new manager still reconfigures chains: a dead storage node goes offline, comes back
            victim = the_chain(cluster).targets[0].node_id
            index = node_index(cluster, victim)
            cluster.kill_storage(index)
            wait_state(cluster, victim, mpb.OFFLINE)
            load.wait_acked(2)
            cluster.restart_storage(index)
            cluster.restart_meta(leader)  # the old leader rejoins as a standby
            cluster.wait_healthy(WAIT)
            assert cluster.leader_meta(timeout=WAIT) == new_leader
            load.wait_acked(3)
        finally:
            load.stop()
        load.check_acked(replicas=3)
        wait_fsck_clean(cluster)
        load.check_linearizable()
