"""`chainfs bench meta`: metadata operations per second, RocksDB vs etcd vs an empty unary RPC.

A benchmark, not a test. Why the baseline: the machine's speed drifts by 2x over minutes, so only
ratios measured in the same run mean anything. The empty RPC is the metaserver's own gRPC health
Check (same process, same thread pool, no store), so `ratio` says how much of an operation's cost
is the metadata work rather than the RPC. Each backend's cell runs between two empty-RPC cells of
the same thread count, and its ratio is to their mean (the machine's speed moves within seconds on
a shared box); cells and ratios are medians over interleaved rounds. Each operation runs for
`--seconds` with 1 and 16 client threads:

- create: an empty file (one synced transaction); create+close: OpenWrite(REPLACE) + CloseWrite,
  how a file write starts and ends; stat: one path lookup; rename: a file within its directory;
  list: one page of a 100-entry directory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from chainfs.bench import io as io_bench
from chainfs.cli import bench_kv_cmd
from chainfs.client.rpc.meta_client import CHANNELS, MetaClient
from chainfs.cluster import LocalCluster
from chainfs.proto import meta_pb2 as mpb

OPS = ("create", "create+close", "stat", "rename", "list")
LIST_ENTRIES = 100


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (not tests): figures beside a same-run baseline")
    bsub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    meta = bsub.add_parser("meta", help="metadata ops/s: RocksDB vs etcd vs an empty unary RPC")
    meta.add_argument("--seconds", type=float, default=0.75, help="per operation, target and round")
    meta.add_argument("--rounds", type=int, default=5, help="interleaved rounds; cells are medians")
    meta.add_argument("--threads", default="1,16", help="client thread counts, comma-separated")
    meta.add_argument("--backends", default="rocksdb,etcd", help="metadata backends to measure")
    meta.add_argument("--dir", default=None, help="where the clusters live (kept; default: a temp dir, removed)")
    meta.add_argument("--json", default=None, help="also write the figures here")
    meta.set_defaults(func=cmd_meta)
    bench_kv_cmd.register(bsub)
    io = bsub.add_parser("io", help="data path: TCP, gRPC and page-cache ceilings beside chainfs reads and writes")
    io_bench.add_arguments(io)
    io.set_defaults(func=lambda a: io_bench.run(a.size_mib, a.reps, a.reader_mib, a.json))


class Target:
    """One metaserver to measure: its client and the per-thread state of each operation."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.meta = MetaClient(address, retry_deadline=10.0)
        self.seq = itertools.count()
        self.files: dict[int, list[str]] = {}  # thread -> created files (stat / rename reuse them)

    def empty_rpc(self) -> Callable[[int], None]:
        stub = health_pb2_grpc.HealthStub(CHANNELS.get(self.meta.current))
        req = health_pb2.HealthCheckRequest(service="")
        return lambda t: stub.Check(req, timeout=10)

    def prepare(self, threads: int) -> None:
        self.meta.mkdir("/bench/list", parents=True)
        for t in range(threads):
            self.meta.mkdir(f"/bench/t{t}", parents=True)
        if len(list(self.meta.list("/bench/list"))) < LIST_ENTRIES:
            for i in range(LIST_ENTRIES):
                self.meta.create(f"/bench/list/e{i:03d}")

    def op(self, name: str) -> Callable[[int], None]:
        meta = self.meta

        def create(t: int) -> None:
            path = f"/bench/t{t}/c{next(self.seq)}"
            meta.create(path)
            self.files.setdefault(t, []).append(path)

        def create_close(t: int) -> None:
            session = meta.open_write(f"/bench/t{t}/w{next(self.seq)}", mpb.REPLACE, "bench")
            meta.close_write(session.session_id, 0)

        def stat(t: int) -> None:
            files = self.files.get(t) or ["/bench/list/e000"]
            meta.stat(files[next(self.seq) % len(files)])

        def rename(t: int) -> None:
            files = self.files.setdefault(t, [])
            if not files:
                create(t)
            src = files.pop()
            dst = f"/bench/t{t}/r{next(self.seq)}"
            meta.rename(src, dst)
            files.insert(0, dst)

        def list_page(t: int) -> None:
            meta.list_page("/bench/list", limit=LIST_ENTRIES)

        return {"create": create, "create+close": create_close, "stat": stat, "rename": rename,
                "list": list_page}[name]


def run_cell(fn: Callable[[int], None], threads: int, seconds: float) -> float:
    """Calls fn from `threads` threads for `seconds`; returns completed calls per second."""
    counts = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(t: int) -> None:
        start.wait()
        n = 0
        try:
            while time.monotonic() < stop_at[0]:
                fn(t)
                n += 1
        except (OSError, grpc.RpcError) as exc:
            errors.append(exc)
        counts[t] = n

    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for th in pool:
        th.start()
    stop_at[0] = time.monotonic() + seconds
    begin = time.monotonic()
    start.wait()
    for th in pool:
        th.join()
    if errors:
        raise errors[0]
    return sum(counts) / (time.monotonic() - begin)


def cmd_meta(args: argparse.Namespace) -> int:
    threads = [int(x) for x in args.threads.split(",") if x.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="chainfs-bench-meta-"))
    clusters = {b: LocalCluster(root / b, storage_nodes=1, replicas=1, targets_per_node=2, meta_backend=b,
                                fsync=False) for b in backends}
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for cluster in clusters.values():
            cluster.start()
        targets = {b: Target(b, c.address) for b, c in clusters.items()}
        for target in targets.values():
            target.prepare(max(threads))
        empty = next(iter(targets.values())).empty_rpc()
        for r in range(args.rounds):
            for op in OPS:
                for n in threads:
                    cell = results.setdefault(f"{op}|{n}", {})
                    before = run_cell(empty, n, args.seconds)
                    cell.setdefault("empty-rpc", []).append(before)
                    for b in backends:  # empty, backend, empty, backend, ..., empty
                        rate = run_cell(targets[b].op(op), n, args.seconds)
                        after = run_cell(empty, n, args.seconds)
                        cell.setdefault(b, []).append(rate)
                        cell.setdefault(f"{b}_ratio", []).append(rate / ((before + after) / 2))
                        cell["empty-rpc"].append(after)
                        before = after
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for cluster in clusters.values():
            cluster.stop()
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    report(results, backends, args.json)
    return 0


def report(results: dict[str, dict[str, list[float]]], backends: list[str], json_path: str | None) -> None:
    table = Table(title="chainfs bench meta: ops/s and ratio to the empty RPCs around it (medians over rounds)")
    for col in ("op", "threads", *[f"{b} ops/s" for b in backends], "empty RPC/s", *[f"{b} ratio" for b in backends]):
        table.add_column(col, justify="right")
    out = []
    for key, by in results.items():
        op, n = key.split("|")
        med = {b: statistics.median(v) for b, v in by.items()}
        base = med["empty-rpc"]
        table.add_row(op, n, *[f"{med[b]:,.0f}" for b in backends], f"{base:,.0f}",
                      *[f"{med[f'{b}_ratio']:.2f}x" for b in backends])
        out.append({"op": op, "threads": int(n), "empty_rpc": base, "runs": by,
                    **{b: med[b] for b in backends}, **{f"{b}_ratio": med[f"{b}_ratio"] for b in backends}})
    Console().print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2))
