"""What the CloseWrite length check costs: small-file writes with and without it, in one run.

The metaserver runs in a child process that switches the check on or off between rounds when told
through a pipe (its storage question is the only difference); three storage servers are real
processes and the client runs here. Rounds alternate, medians are reported with their ratio. Usage: `.venv/bin/python scripts/bench_close_check.py [rounds] [files]`.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chainfs.client import ChainClient
from chainfs.cluster.process import spawn, stop_pid, wait_for
from chainfs.metaserver.server import MetaServer
from chainfs.proto import meta_pb2 as mpb


def _metaserver(root: str, conn) -> None:  # noqa: ANN001 - a multiprocessing connection
    meta = MetaServer(Path(root) / "meta", replication=3, min_nodes=3)
    meta.start()
    check = meta.namespace.extent_check
    conn.send(meta.address)
    while (command := conn.recv()) != "stop":
        meta.namespace.extent_check = check if command == "on" else None
        conn.send("ok")
    meta.stop()


def main(rounds: int = 7, files: int = 64) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        conn, child_conn = mp.Pipe()
        child = mp.get_context("spawn").Process(target=_metaserver, args=(tmp, child_conn))
        child.start()
        address = conn.recv()
        procs = [spawn("chainfs.storageserver", ["--insecure", "--data-dir", str(root / f"s{i}"), "--meta", address,
                                                 "--targets", "2", "--no-fsync"], root / f"s{i}.log")
                 for i in range(3)]
        try:
            client = ChainClient(address, retry_deadline=30.0)
            wait_for(lambda: len(client.routing.refresh().chains) == 2, 60.0, "chains")
            client.mkdir("/b", layout=mpb.Layout(chunk_size=64 * 1024, stripe_width=2))
            blob = b"x" * 4096
            times: dict[str, dict[bool, list[float]]] = {"batched": {True: [], False: []},
                                                          "one by one": {True: [], False: []}}
            for r in range(rounds):
                for on in (r % 2 == 0, r % 2 == 1):  # alternate which goes first
                    conn.send("on" if on else "off")
                    conn.recv()
                    t0 = time.perf_counter()
                    client.write_files({f"/b/{r}-{on}-{i}": blob for i in range(files)})
                    times["batched"][on].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i in range(files // 4):
                        client.write_file(f"/b/one-{r}-{on}-{i}", blob)
                    times["one by one"][on].append((time.perf_counter() - t0) * 4)
            for kind, by in times.items():
                with_check, without = statistics.median(by[True]), statistics.median(by[False])
                print(f"{kind}: {files} files of 4 KiB in {with_check * 1000:.1f} ms with the check, "
                      f"{without * 1000:.1f} ms without: ratio {with_check / without:.2f} (medians of {rounds})")
        finally:
            for proc in procs:
                stop_pid(proc.pid, "chainfs.storageserver", proc=proc)
            conn.send("stop")
            child.join(timeout=30)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
