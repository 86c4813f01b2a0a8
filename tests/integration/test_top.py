"""`chainfs top` against a real cluster and an engine that announced itself to it: node
throughput while a client writes, chains, and the engine's KV hit rate from its /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.common.scrape import scrape
from chainfs.engine.registry import REGISTRY_DIR, engines
from chainfs.loadtest.services import EngineProcess

pytestmark = pytest.mark.integration

PROMPT = "a prefix that every request shares, long enough for blocks; " * 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("top"), storage_nodes=3, replicas=3, targets_per_node=1,
                      fsync=False) as c:
        yield c


def complete(url: str) -> dict:
    req = urllib.request.Request(f"{url}/v1/completions", json.dumps({"prompt": PROMPT, "max_tokens": 2}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_top_shows_throughput_chains_and_engine_hit_rate(cluster: LocalCluster, tmp_path: Path) -> None:
    with EngineProcess("tiny", f"{cluster.url}/kv", tmp_path / "engine.log", block_tokens=16) as engine:
        wait_for(lambda: [e["url"] for e in engines(cluster.address)] == [engine.url], 30,
                 "the engine to announce itself")
        complete(engine.url)
        # the first request's blocks are stored behind its reply: wait until a repeat hits them
        wait_for(lambda: complete(engine.url)["usage"]["prompt_cache_hit_tokens"] > 0, 30, "a cache hit")
        m = scrape(engine.url)
        rate = m.total("vllm:prefix_cache_hits_total") / m.total("vllm:prefix_cache_queries_total")

        client, stop = ChainClient(cluster.address), threading.Event()
        written: list[int] = []
        failures: list[BaseException] = []

        def write() -> None:
            try:
                while not stop.is_set():
                    client.write_file("/top/load.bin", os.urandom(1 << 20))
                    written.append(1)
            except BaseException as e:  # noqa: BLE001 - the test reports it below
                failures.append(e)

        def top_once() -> tuple[subprocess.CompletedProcess, list[str], list[float]]:
            done = subprocess.run([sys.executable, "-m", "chainfs.cli.main", "top", cluster.url, "--once",
                                   "--interval", "1.5"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "COLUMNS": "200"}, stdin=subprocess.DEVNULL)
            rows = [line for line in done.stdout.splitlines() if "127.0.0.1:" in line and "jobs/" in line]
            return done, rows, [float(line.split("MB/s")[1].split()[-1]) for line in rows]

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            # a loaded machine can take longer than one interval per 1 MiB write: start once the
            # writer is going, and allow a few views before calling the throughput missing
            wait_for(lambda: bool(written or failures), 60, "the writer's first file")
            for _ in range(3):
                done, node_rows, writes = top_once()
                if done.returncode != 0 or max(writes, default=0) > 0 or failures:
                    break
        finally:
            stop.set()
            writer.join(timeout=60)
        assert not failures, f"the writer failed: {failures[0]!r}"
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "healthy" in out and out.count(": serving") == 3
        assert engine.url in out and "tiny" in out and f"{rate:.1%}" in out
        assert len(node_rows) == 3
        assert max(writes) > 0, f"no write throughput while a client wrote: {node_rows}"
        dashboard_metrics_are_served(cluster, engine.url)
    # a stopped engine withdraws its announcement
    assert engines(cluster.address) == []
    assert ChainClient(cluster.address).ls(REGISTRY_DIR) == []


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-chainfs.json"


def dashboard_metrics_are_served(cluster: LocalCluster, engine_url: str) -> None:
    """Every metric the Grafana dashboard queries is served by this cluster and engine."""
    sys.path.insert(0, str(DASHBOARD.parents[1] / "scripts"))
    try:
        from grafana_dashboard import dashboard
    finally:
        sys.path.pop(0)
    board = json.loads(DASHBOARD.read_text())
    assert board == dashboard(), "docs/grafana-chainfs.json is stale: run scripts/grafana_dashboard.py"
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    wanted = {name for e in exprs for name in re.findall(r"(?:chainfs_|vllm:)[a-z0-9_:]+", e)}
    with pytest.raises(FileNotFoundError):
        ChainClient(cluster.address).stat("/top/missing")  # an error, so errors by reason exist
    servers = [f"127.0.0.1:{cluster.state.meta.metrics_port}"] + [f"127.0.0.1:{s.metrics_port}"
                                                                  for s in cluster.state.storage]
    served = {name for addr in [*servers, engine_url] for name, _ in scrape(addr)}
    assert wanted and wanted <= served, f"the dashboard queries metrics nobody serves: {wanted - served}"
