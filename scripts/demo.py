"""`make demo`: start a local cluster, write and read a file through the client, show the cluster.

(Until the load-test comparison lands, this is the project's main job.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from rich.console import Console

from chainfs.cli import cluster_view
from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.common.config import MiB


def main() -> int:
    console = Console()
    size = 64 * MiB
    with tempfile.TemporaryDirectory(prefix="chainfs-demo-") as root:
        console.print(f"[bold]starting a local cluster[/] (1 metaserver, 3 storage servers, 3 replicas) in {root}")
        with LocalCluster(root, storage_nodes=3, replicas=3) as cluster:
            console.print(f"cluster up at [cyan]{cluster.url}[/]")
            client = ChainClient(cluster.address)
            data = os.urandom(size)
            t0 = time.perf_counter()
            inode = client.write_file("/demo/hello.bin", data)
            t1 = time.perf_counter()
            back = client.read_file("/demo/hello.bin")
            t2 = time.perf_counter()
            same = back == data
            console.print(f"wrote {cluster.url}/demo/hello.bin: {inode.length / MiB:.0f} MiB in "
                          f"{t1 - t0:.2f}s ({size / MiB / (t1 - t0):.0f} MB/s, 3 replicas); "
                          f"read back in {t2 - t1:.2f}s ({size / MiB / (t2 - t1):.0f} MB/s): "
                          + ("[green]byte-exact[/]" if same else "[red]MISMATCH[/]"))
            console.print(f"chunks: {len(inode.layout.chains)} chains x {inode.layout.chunk_size // MiB} MiB chunks; "
                          f"entries in /demo: {[e.name for e in client.ls('/demo')]}")
            table = cluster.routing()
            f = cluster_view.facts(table, cluster_view.scrape_nodes(table))
            console.print(cluster_view.node_table(f, f"chainfs cluster {cluster.url}"))
            console.print(cluster_view.target_table(f))
            console.print(cluster_view.chain_table(f))
        console.print("cluster stopped; nothing left running")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
