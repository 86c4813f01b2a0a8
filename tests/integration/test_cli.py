"""The `chainfs` command as users run it: a detached cluster, file commands, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainfs.cluster.etcd import etcd_binary
from chainfs.cluster.netns import netns_supported
from chainfs.cluster.process import is_alive

pytestmark = pytest.mark.integration

CHAINFS = [sys.executable, "-m", "chainfs.cli.main"]


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CHAINFS, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"chainfs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def test_cluster_up_files_status_down(tmp_path: Path) -> None:
    cdir = tmp_path / "cluster"
    up = run("cluster", "up", "--dir", str(cdir), "--storage-nodes", "3", "--replicas", "2",
             "--targets-per-node", "2")
    url = up.stdout.strip().splitlines()[-1]
    state = json.loads((cdir / "cluster.json").read_text())
    pids = [state["meta"]["pid"]] + [s["pid"] for s in state["storage"]]
    try:
        assert url == f"chainfs://{state['address']}"
        status = json.loads(run("cluster", "status", "--dir", str(cdir), "--json").stdout)
        assert len(status["nodes"]) == 3 and all(n["alive"] for n in status["nodes"])
        assert len(status["chains"]) == 3
        assert all(t["state"] == "serving" for c in status["chains"] for t in c["targets"])
        table = run("cluster", "status", "--dir", str(cdir)).stdout
        assert "serving" in table and "routing version" in table

        local = tmp_path / "in.bin"
        local.write_bytes(os.urandom(1_500_000))
        run("put", str(local), f"{url}/d/in.bin")
        assert run("ls", f"{url}/d").stdout.split() == ["in.bin"]
        run("get", f"{url}/d/in.bin", str(tmp_path / "out.bin"))
        assert (tmp_path / "out.bin").read_bytes() == local.read_bytes()
        run("rm", f"{url}/d/in.bin")
        missing = run("ls", f"{url}/d/in.bin", check=False)
        assert missing.returncode == 1
        assert "no such file or directory" in missing.stderr.lower() and "/d/in.bin" in missing.stderr
        assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
        bad = run("ls", "not-a-url", check=False)
        assert bad.returncode == 1 and "chainfs URL" in bad.stderr
        usage = run("frobnicate", check=False)
        assert usage.returncode == 2
    finally:
        run("cluster", "down", "--dir", str(cdir))
    assert not any(is_alive(p) for p in pids), "cluster down must stop every process"


def test_unreachable_cluster_names_the_address() -> None:
    proc = run("ls", "chainfs://127.0.0.1:9/x", check=False, timeout=60)
    assert proc.returncode == 1
    assert "127.0.0.1:9" in proc.stderr


def put_and_get(url: str, tmp_path: Path, size: int) -> None:
    """A file written to `url` with `chainfs put` reads back the same with `chainfs get`."""
    local = tmp_path / "in.bin"
    local.write_bytes(os.urandom(size))
    run("put", str(local), url)
    run("get", url, str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == local.read_bytes()


@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (scripts/install_sysdeps.sh)")
def test_cluster_up_on_etcd_with_three_metaservers(tmp_path: Path) -> None:
    cdir = tmp_path / "cluster"
    up = run("cluster", "up", "--dir", str(cdir), "--storage-nodes", "2", "--replicas", "2",
             "--targets-per-node", "1", "--meta-backend", "etcd", "--metaservers", "3", "--etcd-members", "3")
    url = up.stdout.strip().splitlines()[-1]
    state = json.loads((cdir / "cluster.json").read_text())
    pids = [m["pid"] for m in state["metas"]] + [m["pid"] for m in state["etcd"]] + [s["pid"] for s in state["storage"]]
    try:
        assert len(pids) == 8 and url == f"chainfs://{state['address']}" and state["address"].count(",") == 2
        status = json.loads(run("cluster", "status", "--dir", str(cdir), "--json").stdout)
        assert len(status["nodes"]) == 2 and all(status["processes"].values()) and len(status["processes"]) == 8
        put_and_get(url + "/d/in.bin", tmp_path, 300_000)
    finally:
        run("cluster", "down", "--dir", str(cdir))
    assert not any(is_alive(p) for p in pids), "cluster down must stop every process, etcd included"


@pytest.mark.skipif(etcd_binary() is None or netns_supported() is not None,
                    reason=f"needs etcd and network namespaces ({netns_supported()})")
def test_cluster_up_netns_runs_each_server_on_its_own_host(tmp_path: Path) -> None:
    cdir = tmp_path / "cluster"
    up = run("cluster", "up", "--dir", str(cdir), "--storage-nodes", "2", "--replicas", "2",
             "--targets-per-node", "1", "--meta-backend", "etcd", "--metaservers", "2", "--netns")
    url = up.stdout.strip().splitlines()[-1]
    state = json.loads((cdir / "cluster.json").read_text())
    names = [f"cfs-{state['netns_tag']}-{i}" for i in range(state["netns_hosts"])]
    try:
        hosts = {m["host"] for m in state["metas"] + state["storage"]} | {m["host"] for m in state["etcd"]}
        assert len(hosts) == 5 and state["netns_hosts"] == 5 and not hosts & {"127.0.0.1", ""}
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(n in listed for n in names)
        put_and_get(url + "/in.bin", tmp_path, 100_000)
    finally:
        run("cluster", "down", "--dir", str(cdir))
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names), "cluster down must remove its namespaces"
