"""The metaserver SIGKILLed under a write load and restarted: clients retry, nothing acknowledged is
lost, the namespace passes fsck, and the register histories stay linearizable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.harness import WAIT, Load, make_cluster, wait_fsck_clean

pytestmark = pytest.mark.fault


def test_metaserver_sigkill_under_load(tmp_path: Path) -> None:
    with make_cluster(tmp_path / "c") as cluster:
        load = Load(cluster).start()
        try:
            load.wait_acked(3)
            cluster.kill_meta()
            cluster.restart_meta()
            cluster.wait_healthy(WAIT)
            load.wait_acked(5)  # clients found the restarted metaserver
        finally:
            load.stop()
        load.check_acked(replicas=3)
        wait_fsck_clean(cluster)
        load.check_linearizable()
