"""What integrity costs, in one run: scrub throughput per node, and reads with and without the
per-block CRC checks.

A metaserver runs here; one storage node (one target, no fsync) runs in a child process that, when
told through a pipe, switches its block verification (`ChunkReader.load`) off or on, or times a
scrub of its target. The client runs here (its short-circuit reads verify blocks too, switched with
the node's). Every measurement is repeated in interleaved rounds (verified and bypassed alternate
which goes first) and reported as medians with their ratios:

- scrub: `check_copy` over every chunk (read + whole-chunk CRC + block CRCs, unbounded) against a
  plain read of the same chunks, and one paced `Scrubber.scrub_pass` at 64 MiB/s (the limiter);
- reads of 1 MiB ranges at unaligned offsets (the block path: covering blocks read and checked),
  over the network and short-circuit, and whole-file short-circuit reads, verified vs bypassed.

Usage: `.venv/bin/python scripts/bench_integrity.py [rounds] [size_mib]`.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chainfs.client import ChainClient
from chainfs.client.rpc import data_path
from chainfs.cluster.process import wait_for
from chainfs.common.config import MiB
from chainfs.metaserver.server import MetaServer
from chainfs.proto import meta_pb2 as mpb

RANGE = MiB


def _no_check(view, lo, crcs) -> bool:  # noqa: ANN001 - stands in for checksum.blocks_match
    return True


def _node(root: str, meta_address: str, conn) -> None:  # noqa: ANN001 - a multiprocessing connection
    from chainfs.storageserver import reads
    from chainfs.storageserver.chunk_ids import key_of
    from chainfs.storageserver.repair import check_copy
    from chainfs.storageserver.scrub import Scrubber
    from chainfs.storageserver.server import StorageNode

    node = StorageNode(Path(root) / "node", meta_address, targets=1, fsync=False, rejoin_wait=False,
                       metrics_port=-1, scrub_mib_s=0)
    node.start()
    real = reads.blocks_match
    conn.send("up")
    store = node._local_stores[0]
    while (command := conn.recv()) != "stop":
        if command in ("on", "off"):
            reads.blocks_match = real if command == "on" else _no_check
            conn.send("ok")
            continue
        keys = [key_of(m.chunk) for m in store.list_chunks(0, None, 100000)[0]]
        t0 = time.perf_counter()
        if command == "scrub":
            nbytes = sum(check_copy(store, k)[0].length for k in keys)
        elif command == "plain":
            nbytes = sum(len(store.read_committed(k)[1]) for k in keys)
        else:  # paced
            target = next(iter(node.stores))
            scrubber = Scrubber(node.routing, {target: store}, node.repairer, mib_s=64.0)
            nbytes = scrubber.scrub_pass()[1]
        conn.send(nbytes / MiB / (time.perf_counter() - t0))
    node.stop()


def main(rounds: int = 5, size_mib: int = 256) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        meta = MetaServer(Path(tmp) / "meta", replication=1, min_nodes=1)
        meta.start()
        conn, child_conn = mp.Pipe()
        child = mp.get_context("spawn").Process(target=_node, args=(tmp, meta.address, child_conn))
        child.start()
        try:
            assert conn.recv() == "up"
            net = ChainClient(meta.address, short_circuit=False)
            local = ChainClient(meta.address, short_circuit=True)
            wait_for(lambda: len(net.routing.refresh().chains) == 1, 60.0, "the chain")
            net.mkdir("/b", layout=mpb.Layout(chunk_size=4 * MiB, stripe_width=1))
            size = size_mib * MiB
            net.write_file("/b/f", bytes(range(256)) * (size // 256))
            buffer = bytearray(size)
            starts = list(range(4096 + 123, size - RANGE, 3 * RANGE + 4096))

            def ranges(client: ChainClient) -> float:
                inode = client.stat("/b/f")
                t0 = time.perf_counter()
                for start in starts:
                    client.read_inode_into(inode, memoryview(buffer)[:RANGE], start)
                return len(starts) * RANGE / MiB / (time.perf_counter() - t0)

            def whole(client: ChainClient) -> float:
                t0 = time.perf_counter()
                client.read_into("/b/f", buffer)
                return size_mib / (time.perf_counter() - t0)

            reads = {"ranges_network": lambda: ranges(net), "ranges_short_circuit": lambda: ranges(local),
                     "whole_short_circuit": lambda: whole(local)}
            for fn in reads.values():
                fn()  # warm: connections, routing, page cache
            network_reads = [0]
            read_items = data_path.read_items

            def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
                network_reads[0] += 1
                return read_items(*args, **kwargs)

            data_path.read_items = counted  # short-circuit reads that fell back to the network
            local.read_file("/b/f", 4096 + 123, RANGE)
            whole(local)
            assert network_reads[0] == 0, "short-circuit reads fell back to the network"
            data_path.read_items = read_items
            results: dict[str, list[float]] = {}
            real = data_path.blocks_match
            for r in range(rounds):
                for k, (name, fn) in enumerate(reads.items()):
                    for on in ((True, False) if (r + k) % 2 == 0 else (False, True)):
                        conn.send("on" if on else "off")
                        conn.recv()
                        data_path.blocks_match = real if on else _no_check
                        results.setdefault(f"{name}_{'verified' if on else 'bypassed'}", []).append(fn())
                data_path.blocks_match = real
                for command in ("scrub", "plain"):
                    conn.send(command)
                    results.setdefault(f"scrub_{command}", []).append(conn.recv())
            conn.send("paced")
            paced = conn.recv()
            med = {k: statistics.median(v) for k, v in results.items()}
            for k, v in sorted(med.items()):
                print(f"{k:34s} {v:9.1f} MiB/s")
            for name in reads:
                v, b = med[f"{name}_verified"], med[f"{name}_bypassed"]
                print(f"{name}: verified/bypassed = {v / b:.2f}")
            print(f"scrub verify (unbounded) / plain read of the same chunks = "
                  f"{med['scrub_scrub'] / med['scrub_plain']:.2f}")
            print(f"paced scrub pass at --scrub-mib-s 64: {paced:.1f} MiB/s")
            print(f"(medians of {rounds} interleaved rounds, {size_mib} MiB file, 4 MiB chunks, one node)")
        finally:
            data_path.blocks_match = real if "real" in locals() else data_path.blocks_match
            conn.send("stop")
            child.join(timeout=60)
            meta.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
