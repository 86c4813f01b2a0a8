"""The `chainfs` command: one entry point, subcommands registered by topic modules.

Exit status: 0 on success, 1 when an operation fails, 2 on a usage error. Failures print one line
(`chainfs: error: ...`); `--debug` (anywhere on the line) shows the traceback. A reader that closes
the pipe early (`chainfs cat URL | head`) ends the command quietly with status 0.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

from chainfs.cli import (bench_cmd, cluster_cmd, copy_cmd, engine_cmd, file_cmd, fsck_cmd, loadtest_cmd,
                         model_cmd, mount_cmd, server_cmd, sync_cmd, targets, top_cmd, user_cmd)
from chainfs.cli.parser import Parser
from chainfs.cli.targets import UsageError
from chainfs.common.auth import ENV_TOKEN_FILE


def package_version() -> str:
    try:
        return version("chainfs")
    except PackageNotFoundError:  # running from a tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="chainfs", description="chainfs: a chain-replicated file system after 3FS. "
                    "Paths are chainfs://HOST:PORT/path URLs (chainfs:///path uses $CHAINFS_ADDRESS) "
                    "or local paths; `-` is stdin or stdout.")
    parser.add_argument("--version", action="version", version=f"chainfs {package_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--no-short-circuit", action="store_true",
                        help="read every chunk over the network, even from replicas on this machine")
    parser.add_argument("--token-file", default=None,
                        help="the token to present (default: $CHAINFS_TOKEN_FILE, then "
                             "~/.config/chainfs/credentials, which `cluster up` writes)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (file_cmd, copy_cmd, sync_cmd, mount_cmd, cluster_cmd, server_cmd, engine_cmd, loadtest_cmd,
                   fsck_cmd, bench_cmd, model_cmd, top_cmd, user_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["loadtest", "locust"]:  # locust parses its own flags (and ours, see locust_main)
        from chainfs.loadtest.locust_main import main as locust_main

        return locust_main(argv[2:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    targets.SHORT_CIRCUIT = not args.no_short_circuit
    if args.token_file:  # the explicit token wins over the environment and the credentials file
        os.environ[ENV_TOKEN_FILE] = os.path.abspath(args.token_file)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("chainfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_pipe_exit()
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            return _quiet_pipe_exit()
        if args.debug:
            raise
        print(f"chainfs: error: {describe(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


def _quiet_pipe_exit() -> int:
    """The reader went away (`| head`): that is how pipes end, not an error. Point stdout at
    /dev/null so the interpreter's final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        named = exc.filename and str(exc.filename) in exc.strerror
        return exc.strerror if named or not exc.filename else f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
