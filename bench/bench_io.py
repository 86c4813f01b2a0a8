"""Benchmark (not a test): 1 GiB written and read through chainfs beside the bare gRPC ceiling.

Both are measured in the same run on the same machine, because the machine's speed drifts; the
ratio is the figure worth comparing across runs. The ceiling is a client-streaming upload and a
server-streaming download of 1 MiB messages between two processes, with no storage behind them.

    python bench/bench_io.py [--size-mib 1024] [--replicas 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.process import read_port, wait_for
from chainfs.common.config import GRPC_OPTIONS, MiB
from chainfs.proto import meta_pb2 as mpb

SINK = "/bench.Bench/Sink"
SOURCE = "/bench.Bench/Source"
_ident = (lambda b: b)  # noqa: E731 - raw bytes on the wire, no protobuf


def serve_ceiling(port_file: str) -> None:
    """The peer process: a sink that counts bytes and a source that sends N MiB."""
    from concurrent import futures

    def sink(request_iterator, context):
        total = sum(len(m) for m in request_iterator)
        return total.to_bytes(8, "big")

    def source(request, context):
        block = os.urandom(MiB)
        for _ in range(int.from_bytes(request, "big")):
            yield block

    handlers = {
        "Sink": grpc.stream_unary_rpc_method_handler(sink, _ident, _ident),
        "Source": grpc.unary_stream_rpc_method_handler(source, _ident, _ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(4), options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bench", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)
    server.wait_for_termination()


def measure_ceiling(size_mib: int, tmp: Path) -> tuple[float, float]:
    port_file = tmp / "ceiling.port"
    proc = subprocess.Popen([sys.executable, __file__, "--serve-ceiling", str(port_file)])
    try:
        wait_for(lambda: read_port(port_file) is not None, 30, "the ceiling server")
        channel = grpc.insecure_channel(f"127.0.0.1:{read_port(port_file)}", options=GRPC_OPTIONS)
        sink = channel.stream_unary(SINK, request_serializer=_ident, response_deserializer=_ident)
        source = channel.unary_stream(SOURCE, request_serializer=_ident, response_deserializer=_ident)
        block = os.urandom(MiB)
        t0 = time.perf_counter()
        got = int.from_bytes(sink(iter([block] * size_mib), timeout=600), "big")
        up = size_mib / (time.perf_counter() - t0)
        assert got == size_mib * MiB
        t0 = time.perf_counter()
        received = sum(len(m) for m in source(size_mib.to_bytes(8, "big"), timeout=600))
        down = size_mib / (time.perf_counter() - t0)
        assert received == size_mib * MiB
        channel.close()
        return up, down
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure_chainfs(size_mib: int, replicas: int, tmp: Path) -> tuple[float, float]:
    with LocalCluster(tmp / "cluster", storage_nodes=3, replicas=replicas) as cluster:
        client = ChainClient(cluster.address)
        client.mkdir("/bench", layout=mpb.Layout(chunk_size=4 * MiB, stripe_width=4))
        data = os.urandom(size_mib * MiB)
        t0 = time.perf_counter()
        client.write_file("/bench/blob", data)
        write = size_mib / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        back = client.read_file("/bench/blob")
        read = size_mib / (time.perf_counter() - t0)
        if back != data:
            raise RuntimeError("read-back mismatch")
        return write, read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--serve-ceiling", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ceiling:
        serve_ceiling(args.serve_ceiling)
        return 0
    console = Console()
    with tempfile.TemporaryDirectory(prefix="chainfs-bench-") as tmp:
        console.print(f"bare gRPC streaming, {args.size_mib} MiB each way ...")
        up, down = measure_ceiling(args.size_mib, Path(tmp))
        console.print(f"chainfs, {args.size_mib} MiB file, {args.replicas} replicas ...")
        write, read = measure_chainfs(args.size_mib, args.replicas, Path(tmp))
    table = Table(title=f"chainfs I/O, {args.size_mib} MiB, {os.cpu_count()} cores, loopback")
    for col in ("path", "MB/s", "vs. bare gRPC stream"):
        table.add_column(col)
    table.add_row("bare gRPC client-streaming (upload)", f"{up:.0f}", "1.00")
    table.add_row("bare gRPC server-streaming (download)", f"{down:.0f}", "1.00")
    table.add_row(f"chainfs write ({args.replicas} replicas)", f"{write:.0f}", f"{write / up:.2f}")
    table.add_row("chainfs read", f"{read:.0f}", f"{read / down:.2f}")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"size_mib": args.size_mib, "replicas": args.replicas,
                                                "grpc_upload": up, "grpc_download": down,
                                                "chainfs_write": write, "chainfs_read": read}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
