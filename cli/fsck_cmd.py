"""`chainfs fsck URL`: namespace invariants and replica comparison; exit status 1 when anything differs.

`--verify-data` reads every replica of every chunk whole (bounded by `--verify-mib-s`) and names
each bad replica; `--repair` then asks each bad replica's node to repair it from a good replica and
checks again, so the exit status says whether the cluster is clean after the repairs.
"""

from __future__ import annotations

import argparse
import sys

from chainfs.cli.targets import CONNECT_TIMEOUT
from chainfs.client.fsck.check import fsck, repair
from chainfs.client.rpc.meta_client import MetaClient
from chainfs.client.url import parse_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fsck", help="check the namespace and compare chunk replicas chain by chain")
    p.add_argument("url", metavar="URL", help="chainfs://HOST:PORT (the path part is ignored)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call, retries included")
    p.add_argument("--quiet", action="store_true", help="print only problems")
    p.add_argument("--verify-data", action="store_true",
                   help="read and verify every replica of every chunk whole, naming each bad replica")
    p.add_argument("--verify-mib-s", type=float, default=64.0,
                   help="MiB per second --verify-data reads at most (0: no bound)")
    p.add_argument("--repair", action="store_true",
                   help="with --verify-data (implied): repair each bad replica from a good one, then check again")
    p.set_defaults(func=cmd_fsck)


def cmd_fsck(args: argparse.Namespace) -> int:
    if args.verify_mib_s < 0:
        print("fsck: --verify-mib-s must not be negative", file=sys.stderr)
        return 2
    address = parse_url(args.url).address
    MetaClient(address).probe(CONNECT_TIMEOUT)
    verify = args.verify_data or args.repair
    report = fsck(address, timeout=args.timeout, verify_data=verify, verify_mib_s=args.verify_mib_s)
    for problem in report.problems:
        print(problem)
    if args.repair and report.bad:
        for bad, outcome in repair(address, report.bad, timeout=args.timeout):
            print(f"chain {bad.chain_id} chunk {bad.inode}:{bad.index}: target {bad.target_id} "
                  f"on node {bad.node_id}: {outcome}")
        report = fsck(address, timeout=args.timeout, verify_data=True, verify_mib_s=args.verify_mib_s)
        print("after repair:" if report.ok else "after repair, still:")
        for problem in report.problems:
            print(problem)
    if not args.quiet or not report.ok:
        print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1
