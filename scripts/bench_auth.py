"""What authentication costs: a cluster with tokens (the default) beside one started `--insecure`,
same shape, both up at once, measurements interleaved round by round; medians and their ratios.

    .venv/bin/python scripts/bench_auth.py [--rounds 7] [--mib 32]

Rows: `stat` calls per second from one thread on one warm channel (metadata), whole reads of a
4 KiB file per second (`read_file`: a stat, whose reply carries a signed read capability, then one
chunk read the node checks it on), network reads (`read_into`, no short circuit) and 3-replica
writes (`write_file`) in MiB/s. The ratio is auth / insecure (1.00x: no cost). The auth cluster
checks tokens and chunk capabilities (common/capabilities.py); the last lines time the capability
code alone, in this process: signing one, verifying one, a node's check of one already verified,
and a client's lookup.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.common.config import MiB


def _rate(call, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Calls per second of `call` over `seconds`."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        n += 1
    return n / (time.perf_counter() - t0)


def stat_rate(client: ChainClient, seconds: float = 0.5) -> float:
    return _rate(lambda: client.stat("/bench/blob"), seconds)


def small_reads(client: ChainClient, seconds: float = 0.5) -> float:
    return _rate(lambda: client.read_file("/bench/small"), seconds)


def micro_us(fn, n: int = 20000) -> float:  # type: ignore[no-untyped-def]
    """Median microseconds per call of `fn` over 5 runs of n calls."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def capability_costs() -> dict[str, float]:
    from chainfs.client.rpc.grants import CapabilityCache
    from chainfs.common import auth, capabilities

    sec = b"s" * 32
    text = capabilities.issue(sec, 42, "r", 600, "user:u")
    cache = CapabilityCache()
    cache.learn(42, text, "r", lambda: None)
    old = auth.secret()
    auth.set_secret(sec)
    ident = auth.Identity("user", "u")
    try:
        return {"issue_us": micro_us(lambda: capabilities.issue(sec, 42, "r", 600, "user:u")),
                "verify_us": micro_us(lambda: capabilities.verify(sec, text)),
                "node_check_us": micro_us(lambda: capabilities.require_read([text], [42], ident)),
                "client_get_us": micro_us(lambda: cache.get(42, "r"))}
    finally:
        auth.set_secret(old)


def timed_mib(fn, mib: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return mib / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--mib", type=int, default=32)
    args = p.parse_args()
    data = os.urandom(args.mib * MiB)
    buf = memoryview(bytearray(len(data)))
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        with LocalCluster(Path(tmp) / "auth", fsync=True) as on, \
                LocalCluster(Path(tmp) / "insecure", fsync=True, auth=False) as off:
            clients = {"auth": ChainClient(on.address, short_circuit=False),
                       "insecure": ChainClient(off.address, short_circuit=False)}
            for c in clients.values():
                c.write_file("/bench/blob", data)
                c.write_file("/bench/small", os.urandom(4096))
            rows: dict[str, dict[str, list[float]]] = {
                k: {"auth": [], "insecure": []}
                for k in ("stat_per_s", "small_read_per_s", "read_MiB_s", "write_r3_MiB_s")}
            for _ in range(args.rounds):
                for mode, c in clients.items():
                    rows["stat_per_s"][mode].append(stat_rate(c))
                    rows["small_read_per_s"][mode].append(small_reads(c))
                    rows["read_MiB_s"][mode].append(timed_mib(lambda: c.read_into("/bench/blob", buf), args.mib))
                    rows["write_r3_MiB_s"][mode].append(
                        timed_mib(lambda: c.write_file("/bench/w", data), args.mib))
    print(f"{'row':16} {'auth':>9} {'insecure':>9} {'ratio':>7}   ({args.rounds} rounds, medians)")
    for name, by in rows.items():
        a, i = statistics.median(by["auth"]), statistics.median(by["insecure"])
        print(f"{name:16} {a:9.1f} {i:9.1f} {a / i:6.2f}x")
    for name, us in capability_costs().items():
        print(f"{name:16} {us:9.2f} us")


if __name__ == "__main__":
    main()
