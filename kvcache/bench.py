"""`chainfs bench kv`: the KV work of an inference engine on chainfs beside the stores users would
pick instead (a benchmark, not a test).

For batches of 64 blocks of 16 KiB and of 512 KiB, and one engine-sized request (the `small`
engine's 256 KiB blocks of 32 tokens, 32 of them: a 1024-token prompt), it times four operations:

- store: encode and write the batch (fresh keys every repetition);
- lookup: how many leading blocks are stored, as an engine that has not seen them asks;
- load: read and verify the blocks a lookup found (the lookup itself untimed);
- lookup_load: both, as an engine does for a request.

Backends: `chainfs` (a local 3-node, 3-replica cluster, reads over the network), `chainfs-sc`
(the same with short-circuit local reads, where the client has that option), `file` (the local
filesystem), `redis` (redis-server, persistence off, redis-py + hiredis: pipelines and MGET) and
`mooncake` (Mooncake Store over TCP). Every backend stores the same encoded block bytes and every
load verifies them (CRC32C, key) the same way, so the figures differ only by the store. The
backends run interleaved (their order rotates every repetition) and each figure is the median;
ratios are to Redis's median in the same run.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import fsspec
import numpy as np
from rich.console import Console
from rich.table import Table

from chainfs.kvcache import blockformat
from chainfs.kvcache.bench_peers import MooncakePeer, PeerUnavailable, RedisPeer, start_peer
from chainfs.kvcache.hashing import KVNamespace
from chainfs.kvcache.store import KVBlockStore, Lookup

log = logging.getLogger(__name__)

BACKENDS = ("chainfs", "chainfs-sc", "file", "redis", "mooncake")
OPS = ("store", "lookup", "load", "lookup_load")


@dataclass(frozen=True)
class Size:
    name: str
    blocks: int
    shape: tuple[int, ...]  # (layers, K/V, kv heads, tokens, head_dim), float32

    @property
    def tokens(self) -> int:
        return self.shape[3]

    @property
    def payload(self) -> int:
        return int(np.prod(self.shape)) * 4


SIZES = (
    Size("16k", 64, (1, 2, 1, 64, 32)),
    Size("512k", 64, (1, 2, 1, 64, 1024)),
    Size("engine", 32, (8, 2, 2, 32, 64)),  # the `small` preset, --block-tokens 32: 256 KiB a block
)


class StoreTarget:
    """chainfs or the local filesystem, through the real KV block store."""

    def __init__(self, name: str, fs: fsspec.AbstractFileSystem, root: str, size: Size) -> None:
        self.name = name
        ns = KVNamespace(model=f"bench-{size.name}", dtype="float32", layout=str(size.shape),
                       block_tokens=size.tokens)
        self.store = KVBlockStore(fs, root, ns)

    def put(self, keys: list[bytes], blocks: Sequence[np.ndarray]) -> None:
        if self.store.store_blocks(keys, blocks) != len(keys):
            raise RuntimeError(f"{self.name}: store wrote fewer blocks than asked")

    def lookup(self, keys: list[bytes]) -> int:
        self.store.drop_cached_refs()  # as an engine that has not seen these blocks
        return self.store.lookup_keys(keys).hit_blocks

    def prepare_load(self, keys: list[bytes]) -> Lookup:
        self.store.drop_cached_refs()
        return self.store.lookup_keys(keys)

    def load(self, found: Lookup) -> list[np.ndarray]:
        return self.store.load(found)

    def lookup_load(self, keys: list[bytes]) -> list[np.ndarray]:
        self.store.drop_cached_refs()
        return self.store.load(self.store.lookup_keys(keys))

    def close(self) -> None:
        pass


class PeerTarget:
    """Redis or Mooncake: the same block bytes under the same keys, one batched call per step."""

    def __init__(self, peer: RedisPeer | MooncakePeer, size: Size) -> None:
        self.name, self.peer, self.size = peer.name, peer, size

    def put(self, keys: list[bytes], blocks: Sequence[np.ndarray]) -> None:
        self.peer.put(keys, [blockformat.encode(k, b, self.size.tokens) for k, b in zip(keys, blocks)])

    def lookup(self, keys: list[bytes]) -> int:
        return _leading(self.peer.exist(keys))

    def prepare_load(self, keys: list[bytes]) -> list[bytes]:
        return keys[:self.lookup(keys)]

    def load(self, keys: list[bytes]) -> list[np.ndarray]:
        return self._decode(keys, self.peer.get(keys))

    def lookup_load(self, keys: list[bytes]) -> list[np.ndarray]:
        return self._decode(keys, self.peer.get(keys))  # one MGET answers both, as users do

    @staticmethod
    def _decode(keys: list[bytes], blobs: list[bytes | None]) -> list[np.ndarray]:
        out = []
        for key, blob in zip(keys, blobs):
            if blob is None:
                break
            out.append(blockformat.decode(blob, key))
        return out

    def close(self) -> None:
        pass


def _leading(flags: Sequence[bool]) -> int:
    n = 0
    for f in flags:
        if not f:
            break
        n += 1
    return n


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t) * 1000, result


def measure(targets: list[Any], size: Size, reps: int) -> dict[str, dict[str, list[float]]]:
    """ms of each op on each target, `reps` times, the targets' order rotating every repetition."""
    rng = np.random.default_rng(size.payload)
    blocks = [rng.standard_normal(size.shape).astype(np.float32) for _ in range(size.blocks)]
    times: dict[str, dict[str, list[float]]] = {t.name: {op: [] for op in OPS} for t in targets}
    for rep in range(reps + 1):  # the first round warms connections and caches, and is not kept
        order = targets[rep % len(targets):] + targets[:rep % len(targets)]
        for target in order:
            keys = [os.urandom(16) for _ in range(size.blocks)]
            row = times[target.name]
            ms_store, _ = _timed(lambda: target.put(keys, blocks))
            ms_lookup, hits = _timed(lambda: target.lookup(keys))
            state = target.prepare_load(keys)
            ms_load, loaded = _timed(lambda: target.load(state))
            ms_both, both = _timed(lambda: target.lookup_load(keys))
            if hits != size.blocks or len(loaded) != size.blocks or len(both) != size.blocks:
                raise RuntimeError(f"{target.name}/{size.name}: {hits} hits, {len(loaded)} and {len(both)} "
                                   f"blocks loaded of {size.blocks}")
            if not np.array_equal(loaded[-1], blocks[-1]):
                raise RuntimeError(f"{target.name}/{size.name}: loaded bytes differ from the stored ones")
            if rep:
                for op, ms in zip(OPS, (ms_store, ms_lookup, ms_load, ms_both)):
                    row[op].append(ms)
    return times


def summarize(times: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, float | None]]:
    """{"<backend>/<block>/<op>": {"ms": median, "ratio_to_redis": median / redis's median}}."""
    out: dict[str, dict[str, float | None]] = {}
    for block, per_backend in times.items():
        redis = per_backend.get("redis")
        for backend, ops in per_backend.items():
            for op, samples in ops.items():
                ms = statistics.median(samples)
                base = statistics.median(redis[op]) if redis else None
                out[f"{backend}/{block}/{op}"] = {"ms": round(ms, 3),
                                                  "ratio_to_redis": round(ms / base, 3) if base else None}
    return out


def _short_circuit_option() -> bool:
    from chainfs.client.fsspec.fs import ChainFileSystem

    return "short_circuit" in inspect.signature(ChainFileSystem.__init__).parameters


def run(reps: int = 5, json_path: str | None = None, backends: Sequence[str] = BACKENDS,
        sizes: Sequence[str] = tuple(s.name for s in SIZES), fsync: bool = True,
        console: Console | None = None) -> dict[str, Any]:
    """Runs the benchmark; prints the table, writes JSON if asked, returns the report."""
    from chainfs.cluster import LocalCluster

    console = console or Console()
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    chosen = [s for s in SIZES if s.name in sizes]
    if not chosen or reps < 1:
        raise ValueError("choose at least one block size and one repetition")
    notes: list[str] = []
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="chainfs-bench-kv-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        peers: dict[str, Any] = {}
        for kind in ("redis", "mooncake"):
            if kind in backends:
                try:
                    peers[kind] = start_peer(kind, work)
                except PeerUnavailable as exc:
                    notes.append(f"{kind} not measured: {exc}")
                    console.print(f"[yellow]{kind} not measured:[/] {exc}")
                    continue
                stack.callback(peers[kind].close)
                versions[kind] = peers[kind].version
        fss: dict[str, Any] = {}
        if {"chainfs", "chainfs-sc"} & set(backends):
            cluster = stack.enter_context(LocalCluster(work / "cluster", storage_nodes=3, replicas=3, fsync=fsync))
            host, port = cluster.address.rsplit(":", 1)
            if _short_circuit_option():
                fss["chainfs"] = fsspec.filesystem("chainfs", host=host, port=int(port), short_circuit=False)
                fss["chainfs-sc"] = fsspec.filesystem("chainfs", host=host, port=int(port), short_circuit=True)
            else:
                fss["chainfs"] = fss["chainfs-sc"] = fsspec.filesystem("chainfs", host=host, port=int(port))
                if "chainfs-sc" in backends:
                    notes.append("this client has no short_circuit option: chainfs-sc ran the same "
                                 "network read path as chainfs")
        if "file" in backends:
            fss["file"] = fsspec.filesystem("file")
        times: dict[str, dict[str, dict[str, list[float]]]] = {}
        for size in chosen:
            targets: list[Any] = []
            for name in backends:
                if name in fss:
                    root = str(work / "file-kv") if name == "file" else f"/bench-kv-{name}"
                    targets.append(StoreTarget(name, fss[name], root, size))
                elif name in peers:
                    targets.append(PeerTarget(peers[name], size))
            console.print(f"[bold]{size.blocks} blocks of {size.payload >> 10} KiB[/]: "
                          f"{', '.join(t.name for t in targets)}, {reps} repetitions")
            times[size.name] = measure(targets, size, reps)
    report = {
        "results": summarize(times),
        "config": {"reps": reps, "fsync": fsync, "replicas": 3, "storage_nodes": 3,
                   "sizes": {s.name: {"blocks": s.blocks, "block_bytes": s.payload + blockformat.HEADER_SIZE}
                             for s in chosen}},
        "versions": versions,
        "notes": notes,
    }
    print_table(report, [s.name for s in chosen], list(backends), console)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    return report


def print_table(report: dict[str, Any], sizes: list[str], backends: list[str], console: Console) -> None:
    res = report["results"]
    table = Table(title="KV work per batch: ms (ratio to Redis), medians of interleaved repetitions")
    table.add_column("block")
    table.add_column("op")
    shown = [b for b in backends if any(k.startswith(f"{b}/") for k in res)]
    for b in shown:
        table.add_column(b, justify="right")
    for size in sizes:
        for op in OPS:
            cells = []
            for b in shown:
                r = res.get(f"{b}/{size}/{op}")
                cells.append("-" if r is None else f"{r['ms']:.1f}" + (
                    f" ({r['ratio_to_redis']:.2f}x)" if r["ratio_to_redis"] is not None else ""))
            table.add_row(size, op, *cells)
    console.print(table)
    for note in report["notes"]:
        console.print(f"note: {note}")
