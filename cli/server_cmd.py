"""`chainfs meta serve` and `chainfs storage serve`: single servers for a multi-host deployment.

The servers' own parsers are the source of truth for their flags: their options are added to
these subcommands, so `chainfs meta serve --help` describes `chainfs meta serve`.
"""

from __future__ import annotations

import argparse
import importlib

SERVERS = {"meta": ("chainfs.metaserver.server", "the metaserver: namespace and cluster manager over RocksDB"),
           "storage": ("chainfs.storageserver.server", "a storage server: chunk targets in chains")}


def register(sub: argparse._SubParsersAction) -> None:
    for name, (module, what) in SERVERS.items():
        p = sub.add_parser(name, help=f"run {what.split(':')[0]} (`chainfs {name} serve --help`)")
        actions = p.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
        serve = actions.add_parser("serve", help=f"run {what} until SIGTERM")
        importlib.import_module(module).build_parser(serve)
        serve.set_defaults(func=lambda args, m=module: run(m, args))


def run(module: str, args: argparse.Namespace) -> int:
    return int(importlib.import_module(module).run_server(args=args) or 0)
