"""The `chainfs` command: one entry point, subcommands registered by topic modules.

Exit status: 0 on success, 1 when an operation fails, 2 on a usage error. Failures print one line
(`chainfs: error: ...`); `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from chainfs.cli import cluster_cmd, engine_cmd, file_cmd, fsck_cmd, loadtest_cmd, mount_cmd, server_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chainfs", description="chainfs: a chain-replicated file system")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    file_cmd.register(sub)
    mount_cmd.register(sub)
    cluster_cmd.register(sub)
    server_cmd.register(sub)
    engine_cmd.register(sub)
    loadtest_cmd.register(sub)
    fsck_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Server subcommands parse their own flags (the servers' parsers are the source of truth).
    if len(argv) >= 2 and argv[0] in server_cmd.SERVERS and argv[1] == "serve":
        return server_cmd.run(argv[0], argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("chainfs: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"chainfs: error: {describe(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, file_cmd.UsageError) else 1


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        named = exc.filename and str(exc.filename) in exc.strerror
        return exc.strerror if named or not exc.filename else f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
