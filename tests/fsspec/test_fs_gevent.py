"""Under gevent (as in locust): many greenlets share one client and its channels, and all succeed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from chainfs.cluster import LocalCluster

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import sys
    import gevent
    import fsspec
    from chainfs.client.fsspec import clients, gevent_setup

    host, port = sys.argv[1], int(sys.argv[2])

    def work(i):
        fs = fsspec.filesystem("chainfs", host=host, port=port)   # one instance per greenlet
        data = bytes([i]) * (100_000 + i)
        fs.pipe_file(f"/gevent/f{i}", data)
        assert fs.cat_file(f"/gevent/f{i}") == data

    jobs = [gevent.spawn(work, i) for i in range(20)]
    gevent.joinall(jobs, timeout=120, raise_error=True)
    assert all(j.successful() for j in jobs)
    assert gevent_setup._gevent_ready, "gRPC must run on gevent's hub after monkey-patching"
    assert len(clients._clients) == 1, f"one shared client per cluster, got {len(clients._clients)}"
    print("ok", len(jobs))
""")


def test_greenlets_share_one_client(cluster: LocalCluster) -> None:
    pytest.importorskip("gevent")
    host, port = cluster.address.rsplit(":", 1)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, host, port], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok 20" in proc.stdout
