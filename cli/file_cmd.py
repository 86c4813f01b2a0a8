"""File commands: ls, cat, put, get, cp, mv, rm, mkdir, du, stat.

Every argument is a `chainfs://HOST:PORT/path` URL or a local path; both sides go through fsspec
(ChainFileSystem or the local filesystem), so one copy routine serves put, get and cp. Copies stream
in windows and show a progress bar on a terminal. A malformed URL is a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from chainfs.client.fs import ChainFileSystem
from chainfs.client.url import is_chainfs_url, parse_url

# How long a command keeps retrying an unreachable cluster before it names the address and fails.
CLI_RETRY_DEADLINE = 10.0
COPY_BLOCK = 8 << 20
PROGRESS_MIN_BYTES = 16 << 20  # copies smaller than this finish before a bar is worth drawing


class UsageError(ValueError):
    """A malformed argument: exit status 2, like argparse's own usage errors."""


@dataclass
class Target:
    fs: AbstractFileSystem
    path: str
    text: str  # as the user wrote it (trailing slash kept)

    @property
    def is_chainfs(self) -> bool:
        return isinstance(self.fs, ChainFileSystem)

    def child(self, name: str) -> "Target":
        return Target(self.fs, posixpath.join(self.path, name) if self.is_chainfs else os.path.join(self.path, name),
                      posixpath.join(self.text, name))


def resolve(text: str) -> Target:
    """A URL or local path -> the filesystem and path it names."""
    if is_chainfs_url(text):
        try:
            url = parse_url(text)
        except OSError:
            raise
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return Target(ChainFileSystem(address=url.address, retry_deadline=CLI_RETRY_DEADLINE), url.path, text)
    if "://" in text:
        raise UsageError(f"unsupported URL {text!r}: expected chainfs://HOST:PORT/path or a local path")
    return Target(LocalFileSystem(), os.path.abspath(text), text)


def _info(t: Target) -> dict[str, Any]:
    try:
        return t.fs.info(t.path)
    except FileNotFoundError:
        if t.is_chainfs:
            raise
        raise FileNotFoundError(2, "no such file or directory (neither a chainfs URL nor an existing local path)",
                                t.text) from None


def register(sub: argparse._SubParsersAction) -> None:
    def add(name: str, func: Any, help: str, *args: tuple[str, ...], **flags: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        for spec in args:
            p.add_argument(*spec[:-1], **({"nargs": "+"} if spec[-1] == "+" else {}))
        for flag, text in flags.items():
            p.add_argument(*flag.split("|"), action="store_true", help=text)
        p.set_defaults(func=func)
        return p

    recursive = "-r|--recursive"
    add("ls", cmd_ls, "list a directory (or show a file)", ("path", "+"), **{"-l|--long": "sizes, types, times"})
    add("cat", cmd_cat, "write files' bytes to stdout", ("path", "+"))
    for name, help in (("put", "copy local files into chainfs"), ("get", "copy chainfs files to local paths"),
                       ("cp", "copy files between any chainfs URLs and local paths")):
        add(name, cmd_cp, help, ("src", "+"), ("dst", "1"),
            **{recursive: "copy directories recursively", "-q|--quiet": "no progress bar"})
    add("mv", cmd_mv, "move (atomic rename within one cluster)", ("src", "1"), ("dst", "1"))
    add("rm", cmd_rm, "remove files, or directories with -r", ("path", "+"),
        **{recursive: "remove directories and their contents", "-f|--force": "ignore missing paths"})
    add("mkdir", cmd_mkdir, "create directories", ("path", "+"), **{"-p|--parents": "create parents, allow existing"})
    add("du", cmd_du, "bytes used under each path", ("path", "+"),
        **{"-s|--summarize": "one total per argument", "-H|--human": "human-readable sizes"})
    add("stat", cmd_stat, "show a file or directory", ("path", "+"), **{"--json": "machine-readable output"})


def _one(value: Any) -> str:
    return value[0] if isinstance(value, list) else value


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---- listing and inspection ----

def cmd_ls(args: argparse.Namespace) -> int:
    for text in args.path:
        t = resolve(text)
        info = _info(t)
        entries = t.fs.ls(t.path, detail=True) if info["type"] == "directory" else [info]
        if len(args.path) > 1:
            print(f"{text}:")
        if not args.long:
            for e in sorted(entries, key=lambda e: e["name"]):
                print(posixpath.basename(e["name"].rstrip("/")) + ("/" if e["type"] == "directory" else ""))
            continue
        table = Table(box=None, show_header=True)
        for col in ("type", "size", "modified", "name"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for e in sorted(entries, key=lambda e: e["name"]):
            mtime = e.get("mtime") or 0
            modified = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(mtime)))
            kind = "dir" if e["type"] == "directory" else "file"
            table.add_row(kind, str(e.get("size", 0)), modified, posixpath.basename(e["name"].rstrip("/")))
        Console().print(table)
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    for text in args.path:
        t = resolve(text)
        info = dict(_info(t))
        info["path"] = text
        if args.json:
            print(json.dumps(info, default=str))
        else:
            print("\n".join(f"{k}: {v}" for k, v in info.items() if k != "name"))
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    show = human if args.human else str
    for text in args.path:
        t = resolve(text)
        info = _info(t)
        if info["type"] != "directory" or args.summarize:
            total = t.fs.du(t.path, total=True) if info["type"] == "directory" else info["size"]
            print(f"{show(total)}\t{text}")
            continue
        grand = 0
        for e in sorted(t.fs.ls(t.path, detail=True), key=lambda e: e["name"]):
            size = t.fs.du(e["name"], total=True) if e["type"] == "directory" else e["size"]
            grand += size
            print(f"{show(size)}\t{posixpath.join(text, posixpath.basename(e['name']))}")
        print(f"{show(grand)}\t{text}")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for text in args.path:
        t = resolve(text)
        info = _info(t)
        if info["type"] == "directory":
            raise IsADirectoryError(21, "is a directory", text)
        with t.fs.open(t.path, "rb", details=info) as f:  # the stat we already have
            while block := f.read(COPY_BLOCK):
                out.write(block)
    out.flush()
    return 0


# ---- changing ----

def cmd_mkdir(args: argparse.Namespace) -> int:
    for text in args.path:
        t = resolve(text)
        if args.parents:
            t.fs.makedirs(t.path, exist_ok=True)
        else:
            t.fs.mkdir(t.path, create_parents=False)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    for text in args.path:
        t = resolve(text)
        try:
            info = _info(t)
        except FileNotFoundError:
            if args.force:
                continue
            raise
        if info["type"] == "directory" and not args.recursive:
            raise IsADirectoryError(21, "is a directory (use -r)", text)
        t.fs.rm(t.path, recursive=args.recursive)
    return 0


def cmd_mv(args: argparse.Namespace) -> int:
    src, dst = resolve(_one(args.src)), resolve(_one(args.dst))
    same_cluster = src.is_chainfs and dst.is_chainfs and src.fs.address == dst.fs.address  # type: ignore[attr-defined]
    if same_cluster or (not src.is_chainfs and not dst.is_chainfs):
        src.fs.mv(src.path, dst.path + ("/" if dst.text.endswith("/") else ""))
        return 0
    info = _info(src)
    _copy([src], dst, recursive=info["type"] == "directory", quiet=True)
    src.fs.rm(src.path, recursive=info["type"] == "directory")
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    sources = [resolve(s) for s in args.src]
    dst = resolve(_one(args.dst))
    if args.command == "put" and (dst.is_chainfs is False or any(s.is_chainfs for s in sources)):
        raise UsageError("put copies local paths to a chainfs URL")
    if args.command == "get" and (not all(s.is_chainfs for s in sources) or dst.is_chainfs):
        raise UsageError("get copies chainfs URLs to a local path")
    copied = _copy(sources, dst, recursive=args.recursive, quiet=args.quiet)
    if args.command in ("put", "get") and not args.quiet:
        print(f"{copied} bytes", file=sys.stderr)
    return 0


def _plan(sources: list[Target], dst: Target, recursive: bool) -> Iterator[tuple[Target, Target, dict]]:
    """(source file or directory, destination, source info), parents before children."""
    dst_is_dir = dst.text.endswith("/") or _is_dir(dst)
    if len(sources) > 1 and not dst_is_dir:
        raise NotADirectoryError(20, "copying several sources needs a destination directory", dst.text)
    for src in sources:
        info = _info(src)
        target = dst.child(posixpath.basename(src.path.rstrip("/")) or "root") if dst_is_dir else dst
        if info["type"] != "directory":
            yield src, target, info
            continue
        if not recursive:
            raise IsADirectoryError(21, "is a directory (use -r)", src.text)
        yield src, target, info
        for path, sub in sorted(src.fs.find(src.path, withdirs=True, detail=True).items()):
            rel = os.path.relpath(path, src.path).replace(os.sep, "/")
            if rel != ".":
                yield Target(src.fs, path, posixpath.join(src.text, rel)), _descend(target, rel), sub


def _descend(t: Target, rel: str) -> Target:
    for part in rel.split("/"):
        t = t.child(part)
    return t


def _is_dir(t: Target) -> bool:
    try:
        return t.fs.isdir(t.path)
    except OSError:
        return False


def _copy(sources: list[Target], dst: Target, recursive: bool, quiet: bool) -> int:
    plan = list(_plan(sources, dst, recursive))
    total = sum(info.get("size", 0) or 0 for _, _, info in plan if info["type"] != "directory")
    console = Console(stderr=True)
    show = not quiet and console.is_terminal and total >= PROGRESS_MIN_BYTES
    copied = 0
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, disable=not show,
                  transient=True) as progress:
        task = progress.add_task("copying", total=total)
        for src, target, info in plan:
            if info["type"] == "directory":
                target.fs.makedirs(target.path, exist_ok=True)
                continue
            progress.update(task, description=posixpath.basename(src.path))
            if not target.is_chainfs:
                target.fs.makedirs(os.path.dirname(target.path), exist_ok=True)
            with src.fs.open(src.path, "rb", details=info) as fin, target.fs.open(target.path, "wb") as fout:
                while block := fin.read(COPY_BLOCK):
                    fout.write(block)
                    copied += len(block)
                    progress.advance(task, len(block))
    return copied
