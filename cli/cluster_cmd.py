"""`chainfs cluster up|status|restart-node|down`: the local multi-process cluster.

`status` exit codes: 0 when every node is alive and every target serving, 1 when the metaserver
cannot be reached, 3 when the cluster is degraded (a node down or fenced, a target not serving, a
process of the directory not running); `--json` prints the same facts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from chainfs.cli import cluster_view
from chainfs.cli.targets import human
from chainfs.client.rpc.meta_client import MetaClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.limits import DataLimits
from chainfs.cluster.state import STATE_FILE
from chainfs.common import credentials
from chainfs.common.scrape import scrape_all
from chainfs.proto import meta_pb2 as mpb

EXIT_DEGRADED = 3


def register(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="start, inspect and stop a local cluster")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    up = csub.add_parser("up", help="start a metaserver and storage servers as detached processes")
    up.add_argument("--dir", required=True, help="directory for pids, logs and data")
    up.add_argument("--storage-nodes", type=int, default=3, help="storage server processes")
    up.add_argument("--replicas", type=int, default=3, help="targets per chain (copies of every chunk)")
    up.add_argument("--targets-per-node", type=int, default=4, help="data directories per storage server")
    up.add_argument("--port", type=int, default=0, help="metaserver port (0 picks a free one)")
    up.add_argument("--heartbeat-timeout", type=float, default=5.0, help="seconds of silence before a node is offline")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a healthy cluster")
    up.add_argument("--meta-backend", choices=("rocksdb", "etcd"), default="rocksdb",
                    help="metadata store: embedded RocksDB, or an etcd cluster started alongside")
    up.add_argument("--metaservers", type=int, default=1, help="metaservers over one etcd (etcd backend)")
    up.add_argument("--etcd-members", type=int, default=1, help="etcd members to start (etcd backend)")
    up.add_argument("--scrub-mib-s", type=float, default=16.0,
                    help="MiB/s each storage node's background scrub verifies (0 turns it off)")
    up.add_argument("--scrub-interval", type=float, default=600.0, help="seconds between scrub passes")
    up.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                    help="storage nodes drop a peer silent this long inside a data frame or Write stream "
                         "(default 30; docs/security.md)")
    up.add_argument("--data-max-connections", type=int, metavar="N",
                    help="data connections each storage node serves at once (default 1024)")
    up.add_argument("--data-max-per-client", type=int, metavar="N",
                    help="of those, the most one client (user token, or host without tokens) holds (default 256)")
    up.add_argument("--insecure", action="store_true",
                    help="no tokens: every local process may call every server (default: a secret in "
                         "DIR/auth, a root token in ~/.config/chainfs/credentials; docs/security.md)")
    up.add_argument("--tls", action="store_true",
                    help="mutual TLS on every gRPC and data connection: a CA and certificates in DIR/tls, "
                         "the clients' one found through ~/.config/chainfs/tls (docs/security.md)")
    up.add_argument("--netns", action="store_true",
                    help="run each server in its own network namespace on a private bridge (root only)")
    up.set_defaults(func=cmd_up)

    status = csub.add_parser("status", help="nodes, targets, capacity, throughput, chains; exit 3 if degraded")
    status.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    status.add_argument("--json", action="store_true", help="machine-readable output (the same facts)")
    status.add_argument("--interval", type=float, default=1.0,
                        help="seconds between the two scrapes that give throughput (0: no throughput)")
    status.set_defaults(func=cmd_status)

    restart = csub.add_parser("restart-node", help="stop storage node N (as in cluster.json: storage-N) "
                                                   "and start it again on its port and data")
    restart.add_argument("node", help="the storage node's index (0..N-1), or `meta`")
    restart.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    restart.add_argument("--wait", action="store_true", help="wait until the cluster is healthy again")
    restart.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default %(default)s)")
    restart.set_defaults(func=cmd_restart)

    down = csub.add_parser("down", help="stop every process the cluster directory knows (restarted ones too)")
    down.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    down.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    """A fresh cluster, or, where the directory has one, whatever of it is not running."""
    if (Path(args.dir) / STATE_FILE).exists():
        cluster = LocalCluster.attach(args.dir)
        cluster.start_timeout = args.timeout
        started = cluster.start_missing()
        print(cluster.url)
        print(f"started {', '.join(started)}" if started else "every server was already running", file=sys.stderr)
        return 0
    cluster = LocalCluster(args.dir, storage_nodes=args.storage_nodes, replicas=args.replicas,
                           targets_per_node=args.targets_per_node, port=args.port,
                           heartbeat_timeout=args.heartbeat_timeout, start_timeout=args.timeout,
                           meta_backend=args.meta_backend, metaservers=args.metaservers,
                           etcd_members=args.etcd_members, netns=args.netns, scrub_mib_s=args.scrub_mib_s,
                           scrub_interval=args.scrub_interval, tls=args.tls, auth=not args.insecure,
                           limits=DataLimits(args.stall_timeout, args.data_max_connections,
                                             args.data_max_per_client))
    cluster.start()
    print(cluster.url)
    if cluster.state.auth:
        print(f"root token saved for {cluster.address} in {credentials.path()} "
              f"(more users: chainfs user add NAME --dir {args.dir})", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.dir)
    running = cluster.running()
    metrics = {("meta" if i == 0 else f"meta-{i}"): _addr(cluster, m.metrics_port)
               for i, m in enumerate(cluster.state.metas)}
    metrics.update({f"storage-{i}": _addr(cluster, s.metrics_port) for i, s in enumerate(cluster.state.storage)})
    try:
        table = cluster.routing()
    except OSError as exc:
        if args.json:
            json.dump({"address": cluster.address, "processes": running, "metrics": metrics, "healthy": False,
                       "error": str(exc)}, sys.stdout, indent=2)
            print()
        else:
            print(f"metaserver {cluster.address} unreachable: {exc}", file=sys.stderr)
        return 1
    before = cluster_view.scrape_nodes(table) if args.interval > 0 else None
    if before is not None:
        time.sleep(args.interval)  # the measurement window of the throughput, not a synchronization
    now = cluster_view.scrape_nodes(table)
    f = cluster_view.facts(table, now, before, args.interval)
    meta = scrape_all({"meta": metrics["meta"]}).get("meta") if metrics["meta"] else None
    if meta is not None:
        f["gc_pending_records"] = int(meta.get_one("chainfs_gc_pending_records"))
        f["gc_collected"] = int(meta.get_one("chainfs_gc_collected_total"))
    for name, up in running.items():
        if not up:
            f["problems"].append(f"process {name} is not running")
    f["healthy"] = not f["problems"]
    f["space"] = space_dict(MetaClient(cluster.address).space())
    if args.json:
        json.dump({"address": cluster.address, "url": cluster.url, "processes": running, "metrics": metrics, **f},
                  sys.stdout, indent=2)
        print()
    else:
        console = Console() if sys.stdout.isatty() else Console(width=140)
        console.print(cluster_view.node_table(f, f"chainfs cluster {cluster.url} — routing version "
                                                 f"{f['routing_version']}"))
        console.print(cluster_view.target_table(f))
        console.print(cluster_view.chain_table(f))
        sp = f["space"]
        console.print(f"space: {human(sp['usable_free_bytes'])} free of {human(sp['usable_bytes'])} for files "
                      f"({sp['disks']} disk(s), {human(sp['capacity_bytes'])} raw, {sp['replication']} copies; "
                      "what df on a mount shows)")
        console.print("metrics: " + ", ".join(f"{k} http://{v}/metrics" if v else f"{k} -" for k, v in metrics.items()))
        if "gc_pending_records" in f:
            console.print(f"gc: {f['gc_pending_records']} records pending, {f['gc_collected']} inodes collected")
        for problem in f["problems"]:
            console.print(f"[red]problem:[/] {problem}")
        console.print("[green]healthy[/]" if f["healthy"] else "[red]degraded[/]")
    return 0 if f["healthy"] else EXIT_DEGRADED


def _addr(cluster: LocalCluster, port: int) -> str:
    return f"{cluster.state.host}:{port}" if port else ""


def cmd_restart(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.dir)
    cluster.start_timeout = args.timeout
    if args.node == "meta":
        cluster.restart_meta()
    else:
        if not args.node.isdigit() or not 0 <= int(args.node) < cluster.storage_nodes:
            raise ValueError(f"node must be meta or a storage index in 0..{cluster.storage_nodes - 1}, "
                             f"got {args.node!r}")
        cluster.restart_storage(int(args.node))
    if args.wait:
        cluster.wait_healthy(args.timeout)
    name = "meta" if args.node == "meta" else f"storage-{args.node}"
    pid = cluster.state.meta.pid if args.node == "meta" else cluster.state.storage[int(args.node)].pid
    print(f"restarted {name} (pid {pid})")
    return 0


def space_dict(space: mpb.SpaceReply) -> dict:
    """Raw disk totals and what they hold of files at the cluster's replication (a mount's df)."""
    copies = max(1, space.replication)
    return {"capacity_bytes": space.capacity_bytes, "free_bytes": space.free_bytes, "disks": space.disks,
            "replication": space.replication, "usable_bytes": space.capacity_bytes // copies,
            "usable_free_bytes": space.free_bytes // copies}


def cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.dir)
    cluster.stop()
    left = cluster.live_pids()
    if left:
        print(f"could not stop pids {left}", file=sys.stderr)
        return 1
    print(f"stopped cluster in {cluster.root}")
    return 0
