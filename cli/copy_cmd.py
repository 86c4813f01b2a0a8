"""`chainfs cp | put | get`: copies between chainfs URLs, local paths and `-` (stdin/stdout).

Copies stream in COPY_BLOCK windows (a chainfs destination is one write session, visible whole
when it closes) and show a progress bar on a terminal. Local files are read with plain `open`, so
/dev/stdin, FIFOs and other unseekable sources stream too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import sys
from typing import IO, Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from chainfs.cli.targets import Target, UsageError, expand, info_of, is_dir, resolve, stdout

COPY_BLOCK = 8 << 20
PROGRESS_MIN_BYTES = 16 << 20  # copies smaller than this finish before a bar is worth drawing


def register(sub: argparse._SubParsersAction) -> None:
    for name, help in (("put", "copy local files (or stdin: -) into chainfs"),
                       ("get", "copy chainfs files to local paths (or stdout: -)"),
                       ("cp", "copy files between chainfs URLs, local paths and -")):
        p = sub.add_parser(name, help=help)
        p.add_argument("src", nargs="+", metavar="SRC", help="files or directories (globs allowed; - is stdin)")
        p.add_argument("dst", metavar="DST", help="a file, a directory (trailing / to copy into it), or - for stdout")
        p.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no byte count")
        p.set_defaults(func=cmd_cp)


def cmd_cp(args: argparse.Namespace) -> int:
    sources = expand(args.src, allow_stdio=True)
    dst = resolve(args.dst)
    if args.command == "put" and (not dst.is_chainfs or any(s.is_chainfs for s in sources)):
        raise UsageError("put copies local paths (or -) to a chainfs URL")
    if args.command == "get" and (not all(s.is_chainfs for s in sources) or dst.is_chainfs):
        raise UsageError("get copies chainfs URLs to a local path (or -)")
    copied = copy_all(sources, dst, recursive=args.recursive, quiet=args.quiet)
    if args.command in ("put", "get") and not args.quiet and not dst.is_stdio:
        print(f"{copied} bytes", file=sys.stderr)
    return 0


def plan(sources: list[Target], dst: Target, recursive: bool) -> Iterator[tuple[Target, Target, dict]]:
    """(source file or directory, destination, source info), parents before children."""
    if any(s.is_stdio for s in sources):
        if len(sources) > 1:
            raise UsageError("`-` (stdin) must be the only source")
        if dst.text.endswith("/") or is_dir(dst):
            raise UsageError(f"stdin has no name: give the destination file, not the directory {dst.text}")
        yield sources[0], dst, {"type": "stream", "size": 0}
        return
    into_dir = not dst.is_stdio and (dst.text.endswith("/") or is_dir(dst))
    if len(sources) > 1 and not into_dir and not dst.is_stdio:
        raise NotADirectoryError(20, "copying several sources needs a destination directory", dst.text)
    for src in sources:
        info = info_of(src)
        target = dst.child(posixpath.basename(src.path.rstrip("/")) or "root") if into_dir else dst
        if info["type"] != "directory":
            yield src, target, info
            continue
        if not recursive:
            raise IsADirectoryError(21, "is a directory (use -r)", src.text)
        if dst.is_stdio:
            raise UsageError("cannot copy a directory to stdout")
        yield src, target, info
        assert src.fs is not None
        for path, sub in sorted(src.fs.find(src.path, withdirs=True, detail=True).items()):
            rel = os.path.relpath(path, src.path).replace(os.sep, "/")
            if rel != ".":
                yield Target(src.fs, path, posixpath.join(src.text, rel)), target.descend(rel), sub


def open_read(t: Target, info: dict[str, Any]) -> contextlib.AbstractContextManager[IO[bytes]]:
    if t.is_stdio:
        return contextlib.nullcontext(sys.stdin.buffer)
    if t.is_chainfs:
        return t.fs.open(t.path, "rb", details=info)  # type: ignore[union-attr,return-value]
    return open(t.path, "rb")


def open_write(t: Target) -> contextlib.AbstractContextManager[IO[bytes]]:
    if t.is_stdio:
        return contextlib.nullcontext(stdout())
    if t.is_chainfs:
        return t.fs.open(t.path, "wb")  # type: ignore[union-attr,return-value]
    os.makedirs(os.path.dirname(t.path) or ".", exist_ok=True)
    return open(t.path, "wb")


def copy_file(src: Target, dst: Target, info: dict[str, Any], progress: Any = None, task: Any = None) -> int:
    """One file's bytes, streamed; a chainfs destination appears whole when it closes."""
    copied = 0
    with open_read(src, info) as fin, open_write(dst) as fout:
        while block := fin.read(COPY_BLOCK):
            fout.write(block)
            copied += len(block)
            if progress is not None:
                progress.advance(task, len(block))
        if dst.is_stdio:
            fout.flush()
    return copied


def copy_all(sources: list[Target], dst: Target, recursive: bool, quiet: bool) -> int:
    steps = list(plan(sources, dst, recursive))
    total = sum(info.get("size", 0) or 0 for _, _, info in steps if info["type"] != "directory")
    console = Console(stderr=True)
    show = not quiet and console.is_terminal and total >= PROGRESS_MIN_BYTES
    copied = 0
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, disable=not show,
                  transient=True) as progress:
        task = progress.add_task("copying", total=total)
        for src, target, info in steps:
            if info["type"] == "directory":
                target.fs.makedirs(target.path, exist_ok=True)  # type: ignore[union-attr]
                continue
            progress.update(task, description=posixpath.basename(src.path))
            copied += copy_file(src, target, info, progress, task)
    return copied
