"""`chainfs cluster` operations as separate commands: status exit codes on a degraded cluster,
`up` on a partly running cluster, `restart-node`, and `down` leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from chainfs.cluster import LocalCluster
from chainfs.cluster.process import is_alive, wait_for

pytestmark = pytest.mark.integration


def chainfs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chainfs.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def status(root: Path) -> tuple[int, dict[str, Any]]:
    done = chainfs("cluster", "status", "--dir", str(root), "--json", "--interval", "0.3")
    return done.returncode, json.loads(done.stdout)


@pytest.fixture()
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "c"
    done = chainfs("cluster", "up", "--dir", str(root), "--storage-nodes", "3", "--targets-per-node", "1",
                   "--heartbeat-timeout", "2", "--stall-timeout", "20", "--data-max-per-client", "64")
    assert done.returncode == 0, done.stderr
    try:
        yield root
    finally:
        LocalCluster.attach(root).stop()


def test_status_exit_codes_up_restart_and_down(root: Path) -> None:
    rc, healthy = status(root)
    assert rc == 0 and healthy["healthy"] and healthy["problems"] == []
    node = healthy["nodes"][0]
    assert node["alive"] and node["metrics"] and node["free_bytes"] > 0 and node["read_bps"] is not None
    assert {"chunks", "used_bytes", "free_bytes", "disk_bytes", "write_bps"} <= set(node["targets"][0])
    assert all(healthy["metrics"].values()), "every server's metrics address is printed"
    text = chainfs("cluster", "status", "--dir", str(root), "--interval", "0")
    assert text.returncode == 0 and "healthy" in text.stdout and "/metrics" in text.stdout

    state = json.loads((root / "cluster.json").read_text())
    victim = state["storage"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: status(root)[0] == 3, 60, "status to report the dead node")
    rc, degraded = status(root)
    assert not degraded["healthy"] and not degraded["processes"]["storage-1"]
    assert any("not running" in p for p in degraded["problems"])
    text = chainfs("cluster", "status", "--dir", str(root), "--interval", "0")
    assert text.returncode == 3 and "degraded" in text.stdout

    up = chainfs("cluster", "up", "--dir", str(root))  # starts only what is missing
    assert up.returncode == 0 and "storage-1" in up.stderr, up.stderr
    after = json.loads((root / "cluster.json").read_text())
    assert after["meta"]["pid"] == state["meta"]["pid"] and after["storage"][0]["pid"] == state["storage"][0]["pid"]
    wait_for(lambda: status(root)[0] == 0, 60, "the cluster to be healthy again")

    restarted = chainfs("cluster", "restart-node", "0", "--dir", str(root), "--wait")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = json.loads((root / "cluster.json").read_text())["storage"][0]["pid"]
    assert new_pid != state["storage"][0]["pid"] and is_alive(new_pid)
    # the limits given to `up` are kept in cluster.json and passed to restarted nodes too
    assert state["limits"] == {"stall_timeout": 20.0, "max_connections": None, "max_per_client": 64}
    argv = Path(f"/proc/{new_pid}/cmdline").read_text().split("\0")
    assert argv[argv.index("--stall-timeout") + 1] == "20.0"
    assert argv[argv.index("--data-max-per-client") + 1] == "64" and "--data-max-connections" not in argv
    assert not is_alive(state["storage"][0]["pid"])
    assert chainfs("cluster", "restart-node", "7", "--dir", str(root)).returncode == 1

    pids = [int(line.split()[0]) for line in (root / "pids").read_text().splitlines()]
    assert len(pids) == 6  # meta, 3 nodes, one started by up, one by restart-node
    down = chainfs("cluster", "down", "--dir", str(root))
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if is_alive(p)], "down left a process running"
    rc, gone = status(root)
    assert rc == 1 and not gone["healthy"] and "error" in gone


def test_down_stops_a_process_restarted_behind_its_back(root: Path) -> None:
    """A restart by another LocalCluster object leaves cluster.json's pid stale in this one."""
    stale = LocalCluster.attach(root)
    other = LocalCluster.attach(root)
    other.restart_storage(2)
    replacement = other.state.storage[2].pid
    assert stale.state.storage[2].pid != replacement
    stale.stop()
    assert not is_alive(replacement) and stale.live_pids() == []
