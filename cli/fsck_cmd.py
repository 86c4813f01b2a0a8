"""`chainfs fsck URL`: namespace invariants and replica comparison; exit status 1 when anything differs."""

from __future__ import annotations

import argparse
import sys

from chainfs.cli.targets import CONNECT_TIMEOUT
from chainfs.client.fsck import fsck
from chainfs.client.meta_client import MetaClient
from chainfs.client.url import parse_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fsck", help="check the namespace and compare chunk replicas chain by chain")
    p.add_argument("url", metavar="URL", help="chainfs://HOST:PORT (the path part is ignored)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call, retries included")
    p.add_argument("--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=cmd_fsck)


def cmd_fsck(args: argparse.Namespace) -> int:
    address = parse_url(args.url).address
    MetaClient(address).probe(CONNECT_TIMEOUT)
    report = fsck(address, timeout=args.timeout)
    for problem in report.problems:
        print(problem)
    if not args.quiet or not report.ok:
        print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1
