"""`chainfs meta serve` and `chainfs storage serve`: single servers for a multi-host deployment."""

from __future__ import annotations

import argparse
import importlib

SERVERS = {"meta": "chainfs.metaserver.server", "storage": "chainfs.storageserver.server"}


def register(sub: argparse._SubParsersAction) -> None:
    for name, module in SERVERS.items():
        p = sub.add_parser(name, help=f"run a {name} server (`chainfs {name} serve --help`)")
        p.add_argument("action", choices=["serve"])
        p.set_defaults(func=lambda args, n=name: run(n, ["--help"]))


def run(name: str, argv: list[str]) -> int:
    module = importlib.import_module(SERVERS[name])
    module.run_server(argv)
    return 0
