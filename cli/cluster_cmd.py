"""`chainfs cluster up|status|down`: the local multi-process cluster."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb


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
    up.add_argument("--netns", action="store_true",
                    help="run each server in its own network namespace on a private bridge (root only)")
    up.set_defaults(func=cmd_up)

    status = csub.add_parser("status", help="nodes, targets, chains and their states")
    status.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    down = csub.add_parser("down", help="stop every process of the cluster")
    down.add_argument("--dir", required=True, help="the directory given to `cluster up`")
    down.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir, storage_nodes=args.storage_nodes, replicas=args.replicas,
                           targets_per_node=args.targets_per_node, port=args.port,
                           heartbeat_timeout=args.heartbeat_timeout, start_timeout=args.timeout,
                           meta_backend=args.meta_backend, metaservers=args.metaservers,
                           etcd_members=args.etcd_members, netns=args.netns)
    cluster.start()
    print(cluster.url)
    return 0


def routing_dict(table: mpb.RoutingTable) -> dict:
    return {
        "routing_version": table.version,
        "nodes": [{"node_id": n.node_id, "address": n.address, "alive": n.alive} for n in table.nodes],
        "chains": [
            {"chain_id": c.chain_id, "version": c.version,
             "targets": [{"target_id": t.target_id, "node_id": t.node_id,
                          "state": mpb.TargetState.Name(t.state).lower()} for t in c.targets]}
            for c in table.chains
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.dir)
    running = cluster.running()
    try:
        table = cluster.routing()
    except OSError as exc:
        if args.json:
            json.dump({"address": cluster.address, "processes": running, "error": str(exc)}, sys.stdout, indent=2)
            print()
        else:
            print(f"metaserver {cluster.address} unreachable: {exc}", file=sys.stderr)
        return 1
    info = routing_dict(table)
    if args.json:
        json.dump({"address": cluster.address, "url": cluster.url, "processes": running, **info},
                  sys.stdout, indent=2)
        print()
        return 0
    print_routing(table, title=f"chainfs cluster {cluster.url}")
    return 0


def print_routing(table: mpb.RoutingTable, title: str, console: Console | None = None) -> None:
    console = console or Console()
    nodes = Table(title=f"{title} — routing version {table.version}")
    for col in ("node", "address", "alive"):
        nodes.add_column(col)
    for n in table.nodes:
        nodes.add_row(str(n.node_id), n.address, "yes" if n.alive else "NO")
    console.print(nodes)
    chains = Table(title="chains (head first)")
    for col in ("chain", "version", "targets (target@node: state)"):
        chains.add_column(col)
    for c in table.chains:
        members = ", ".join(f"{t.target_id}@{t.node_id}: {mpb.TargetState.Name(t.state).lower()}" for t in c.targets)
        chains.add_row(str(c.chain_id), str(c.version), members)
    console.print(chains)


def cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.dir)
    cluster.stop()
    print(f"stopped cluster in {cluster.root}")
    return 0
