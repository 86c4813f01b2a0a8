"""`chainfs bench io`: chainfs's data path beside the ceilings of this machine, in one run.

The machine's speed drifts (and other work shares its cores), so every figure is measured in the
same run as its baseline, the repetitions are interleaved (one of each measurement per round) and
each figure is the median of its rounds. Ratios are what compare across runs:

- network reads and writes against a raw TCP socket between two Python processes;
- short-circuit reads against a page-cache read of the same bytes (readinto a reused buffer);
- concurrent readers (separate client processes, and threads of one) against one reader;
- reads and writes of a cluster started with mutual TLS (`--tls`) against the same on a
  plaintext cluster of the same shape (the `_tls` rows: what encryption costs).

Network reads use `ChainClient.read_into` (the bytes land in one preallocated buffer);
writes use `write_file` with an immutable `bytes` (whole chunks go out as slices of it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from chainfs.bench.peers import Peer
from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.common.config import MiB
from chainfs.proto import meta_pb2 as mpb

BASELINES = {
    "tcp_read": "tcp_read", "tcp_write": "tcp_write", "grpc_read": "tcp_read", "grpc_write": "tcp_write",
    "pagecache_read": "pagecache_read", "read_network": "tcp_read", "read_short_circuit": "pagecache_read",
    "write_r1": "tcp_write", "write_r3": "tcp_write",
    "read_network_tls": "read_network", "write_r3_tls": "write_r3",
    "readers_1": "readers_1", "readers_4": "readers_1", "readers_16": "readers_1",
    "readers_4_threads": "readers_1", "readers_16_threads": "readers_1",
}
LAYOUT = mpb.Layout(chunk_size=4 * MiB, stripe_width=4)


def _timed(fn: Callable[[], object], mib: float) -> float:
    t0 = time.perf_counter()
    fn()
    return mib / (time.perf_counter() - t0)


def _reader_process(address: str, path: str, size: int, ready: "multiprocessing.synchronize.Barrier",
                    out: "multiprocessing.Queue") -> None:
    client = ChainClient(address, short_circuit=False)
    buffer = bytearray(size)
    client.read_into(path, buffer)  # connections and routing warm before the clock starts
    ready.wait(timeout=120)
    t0 = time.monotonic()
    n = client.read_into(path, buffer)
    out.put((t0, time.monotonic(), n))


class IoBench:
    def __init__(self, size_mib: int, reader_mib: int, tmp: Path) -> None:
        self.size_mib, self.reader_mib, self.tmp = size_mib, reader_mib, tmp
        self.data = os.urandom(size_mib * MiB)
        self.buffer = memoryview(bytearray(len(self.data)))
        self.page_file = tmp / "pagecache.bin"
        self.page_file.write_bytes(self.data)

    def rounds(self, reps: int, console: Console) -> dict[str, list[float]]:
        tcp, grpc_peer = Peer("tcp", self.tmp), Peer("grpc", self.tmp)
        r3 = LocalCluster(self.tmp / "r3", storage_nodes=3, replicas=3, fsync=True)
        r1 = LocalCluster(self.tmp / "r1", storage_nodes=3, replicas=1, fsync=True)
        rt = LocalCluster(self.tmp / "tls", storage_nodes=3, replicas=3, fsync=True, tls=True)
        results: dict[str, list[float]] = {name: [] for name in BASELINES}
        try:
            r3.start()
            r1.start()
            rt.start()
            net = ChainClient(r3.address, short_circuit=False)
            local = ChainClient(r3.address, short_circuit=True)
            one = ChainClient(r1.address, short_circuit=False)
            sec = ChainClient(rt.address, short_circuit=False)
            for client in (net, one, sec):
                client.mkdir("/bench", parents=True, layout=LAYOUT)
            net.write_file("/bench/blob", self.data)
            sec.write_file("/bench/blob", self.data)
            net.write_file("/bench/readers", self.data[:self.reader_mib * MiB])
            block = self.data[:MiB]
            size = self.size_mib
            for rep in range(reps):
                console.print(f"round {rep + 1} of {reps} ...")
                steps: dict[str, Callable[[], float]] = {
                    "tcp_read": lambda: _timed(lambda: tcp.tcp(b"R", size, self.buffer), size),
                    "tcp_write": lambda: _timed(lambda: tcp.tcp(b"W", size, memoryview(self.data)), size),
                    "grpc_read": lambda: _timed(lambda: grpc_peer.grpc_read(size), size),
                    "grpc_write": lambda: _timed(lambda: grpc_peer.grpc_write(size, block), size),
                    "pagecache_read": lambda: _timed(self._page_read, size),
                    "read_network": lambda: _timed(lambda: self._read(net), size),
                    "read_network_tls": lambda: _timed(lambda: self._read(sec), size),
                    "read_short_circuit": lambda: _timed(lambda: self._read(local), size),
                    "write_r1": lambda: _timed(lambda: one.write_file("/bench/w1", self.data), size),
                    "write_r3": lambda: _timed(lambda: net.write_file("/bench/w3", self.data), size),
                    "write_r3_tls": lambda: _timed(lambda: sec.write_file("/bench/w3", self.data), size),
                    "readers_1": lambda: self._processes(r3.address, 1),
                    "readers_4": lambda: self._processes(r3.address, 4),
                    "readers_16": lambda: self._processes(r3.address, 16),
                    "readers_4_threads": lambda: self._threads(r3.address, 4),
                    "readers_16_threads": lambda: self._threads(r3.address, 16),
                }
                for name, step in steps.items():
                    results[name].append(step())
        finally:
            for stop in (rt.stop, r1.stop, r3.stop, tcp.stop, grpc_peer.stop):
                stop()
        return results

    def _page_read(self) -> None:
        step = 4 * MiB
        with open(self.page_file, "rb", buffering=0) as f:
            for at in range(0, len(self.buffer), step):
                f.readinto(self.buffer[at:at + step])

    def _read(self, client: ChainClient) -> None:
        if client.read_into("/bench/blob", self.buffer) != len(self.data):
            raise RuntimeError("short read")

    def _processes(self, address: str, n: int) -> float:
        ctx = multiprocessing.get_context("spawn")
        ready, out = ctx.Barrier(n + 1), ctx.Queue()
        procs = [ctx.Process(target=_reader_process, args=(address, "/bench/readers", self.reader_mib * MiB,
                                                           ready, out)) for _ in range(n)]
        for p in procs:
            p.start()
        try:
            ready.wait(timeout=120)  # every reader has warmed up; they start together
            spans = [out.get(timeout=600) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.kill()
        total = sum(s[2] for s in spans) / MiB
        return total / (max(s[1] for s in spans) - min(s[0] for s in spans))

    def _threads(self, address: str, n: int) -> float:
        client = ChainClient(address, short_circuit=False)
        size = self.reader_mib * MiB
        buffers = [bytearray(size) for _ in range(n)]
        client.read_into("/bench/readers", buffers[0])
        barrier = threading.Barrier(n + 1)

        def read(buf: bytearray) -> None:
            barrier.wait()
            client.read_into("/bench/readers", buf)

        threads = [threading.Thread(target=read, args=(b,)) for b in buffers]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return n * self.reader_mib / (time.perf_counter() - t0)


def summarize(results: dict[str, list[float]]) -> dict[str, dict[str, float | str]]:
    medians = {name: statistics.median(values) for name, values in results.items() if values}
    return {name: {"mib_s": round(value, 1), "ratio": round(value / medians[BASELINES[name]], 3),
                   "baseline": BASELINES[name]} for name, value in medians.items()}


def run(size_mib: int = 1024, reps: int = 3, reader_mib: int = 128, json_path: str | None = None) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="chainfs-bench-io-") as tmp:
        bench = IoBench(size_mib, min(reader_mib, size_mib), Path(tmp))
        summary = summarize(bench.rounds(reps, console))
    table = Table(title=f"chainfs bench io: {size_mib} MiB, {reps} interleaved rounds (medians), "
                        f"{os.cpu_count()} cores, loopback")
    for col, justify in (("path", "left"), ("MiB/s", "right"), ("ratio", "right"), ("baseline", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, row in summary.items():
        table.add_row(name, f"{row['mib_s']:.0f}", f"{row['ratio']:.2f}", str(row["baseline"]))
    console.print(table)
    if json_path:
        Path(json_path).write_text(json.dumps({"size_mib": size_mib, "reps": reps, "reader_mib": reader_mib,
                                               "cpus": os.cpu_count(), "results": summary}, indent=2))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=1024, help="bytes moved per measurement (default 1024)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds; figures are medians (default 3)")
    parser.add_argument("--reader-mib", type=int, default=128,
                        help="file each concurrent reader reads whole (default 128)")
    parser.add_argument("--json", help="also write the results here")
