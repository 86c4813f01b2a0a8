"""File commands: ls, cat, stat, du, mkdir, rm, mv (copies are in copy_cmd, sync in sync_cmd).

Every path argument is a `chainfs://HOST:PORT/path` URL or a local path and may be a glob pattern;
`cat -` copies stdin. A malformed URL is a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import posixpath
import shutil
import sys
from typing import Any

from chainfs.cli.parser import human_size_parser
from chainfs.cli.targets import (Target, expand, human, info_of, is_dir, mode_string, resolve, stdout,
                                 when)

COPY_BLOCK = 8 << 20


def register(sub: argparse._SubParsersAction) -> None:
    paths = {"nargs": "+", "metavar": "PATH", "help": "chainfs://HOST:PORT/path, a local path, or a glob of them"}
    p = human_size_parser(sub, "ls", help="list directories (or show files)")
    p.add_argument("path", **paths)
    p.add_argument("-l", "--long", action="store_true", help="mode, size, modification time and name")
    p.add_argument("-R", "--recursive", action="store_true", help="list subdirectories too")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("cat", help="write files' bytes to stdout (`-` copies stdin)")
    p.add_argument("path", **paths)
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser("stat", help="show a file's or directory's metadata")
    p.add_argument("path", **paths)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_stat)

    p = human_size_parser(sub, "du", help="bytes used under each path")
    p.add_argument("path", **paths)
    p.add_argument("-s", "--summarize", action="store_true", help="one total per argument")
    p.add_argument("-H", dest="human", action="store_true", help=argparse.SUPPRESS)  # the old spelling
    p.set_defaults(func=cmd_du)

    p = sub.add_parser("mkdir", help="create directories")
    p.add_argument("path", nargs="+", metavar="PATH", help="chainfs://HOST:PORT/path or a local path")
    p.add_argument("-p", "--parents", action="store_true", help="create parents; an existing directory is fine")
    p.set_defaults(func=cmd_mkdir)

    p = sub.add_parser("rm", help="remove files, or directories with -r")
    p.add_argument("path", **paths)
    p.add_argument("-r", "--recursive", action="store_true", help="remove directories and their contents")
    p.add_argument("-f", "--force", action="store_true", help="ignore missing paths and unmatched patterns")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("mv", help="move (one atomic rename within a cluster; copy and remove across)")
    p.add_argument("src", nargs="+", metavar="SRC", help="what to move (globs allowed)")
    p.add_argument("dst", metavar="DST", help="new name, or an existing directory to move into")
    p.set_defaults(func=cmd_mv)


# ---- listing and inspection ----

def cmd_ls(args: argparse.Namespace) -> int:
    targets = expand(args.path)
    headers = len(targets) > 1 or args.recursive
    first = True
    for t in targets:
        info = info_of(t)
        if info["type"] != "directory":
            _print_entries([info], args)
            continue
        stack = [(t.text, t.path)]
        while stack:
            shown, path = stack.pop()
            entries = sorted(t.fs.ls(path, detail=True), key=lambda e: e["name"])  # type: ignore[union-attr]
            if headers:
                print(("" if first else "\n") + f"{shown}:")
            first = False
            _print_entries(entries, args)
            if args.recursive:
                subdirs = [e for e in entries if e["type"] == "directory"]
                stack.extend((posixpath.join(shown, _name(e)), e["name"]) for e in reversed(subdirs))
    return 0


def _name(entry: dict[str, Any]) -> str:
    return posixpath.basename(str(entry["name"]).rstrip("/"))


def _print_entries(entries: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if not args.long:
        for e in entries:
            print(_name(e) + ("/" if e["type"] == "directory" else ""))
        return
    sizes = [human(e.get("size") or 0) if args.human else str(e.get("size") or 0) for e in entries]
    width = max((len(s) for s in sizes), default=1)
    for e, size in zip(entries, sizes):
        suffix = "/" if e["type"] == "directory" else ""
        print(f"{mode_string(e)} {size:>{width}} {when(e.get('mtime') or 0)} {_name(e)}{suffix}")


def cmd_stat(args: argparse.Namespace) -> int:
    for t in expand(args.path):
        info = dict(info_of(t))
        info["path"] = t.text
        if args.json:
            print(json.dumps(info, default=str))
        else:
            info["mode"] = oct(info.get("mode") or 0)
            print("\n".join(f"{k}: {v}" for k, v in info.items() if k != "name"))
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    show = human if args.human else str
    for t in expand(args.path):
        info = info_of(t)
        assert t.fs is not None
        if info["type"] != "directory" or args.summarize:
            total = t.fs.du(t.path, total=True) if info["type"] == "directory" else info["size"]
            print(f"{show(total)}\t{t.text}")
            continue
        grand = 0
        for e in sorted(t.fs.ls(t.path, detail=True), key=lambda e: e["name"]):
            size = t.fs.du(e["name"], total=True) if e["type"] == "directory" else e["size"]
            grand += size
            print(f"{show(size)}\t{posixpath.join(t.text, _name(e))}")
        print(f"{show(grand)}\t{t.text}")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    out = stdout()
    for t in expand(args.path, allow_stdio=True):
        if t.is_stdio:
            shutil.copyfileobj(sys.stdin.buffer, out, COPY_BLOCK)
            continue
        info = info_of(t)
        if info["type"] == "directory":
            raise IsADirectoryError(21, "is a directory", t.text)
        opened = t.fs.open(t.path, "rb", details=info) if t.is_chainfs else open(t.path, "rb")  # type: ignore[union-attr]
        with opened as f:
            while block := f.read(COPY_BLOCK):
                out.write(block)
    out.flush()
    return 0


# ---- changing ----

def cmd_mkdir(args: argparse.Namespace) -> int:
    for text in args.path:
        t = resolve(text)
        assert t.fs is not None
        if args.parents:
            t.fs.makedirs(t.path, exist_ok=True)
        else:
            t.fs.mkdir(t.path, create_parents=False)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    for t in expand(args.path, missing_ok=args.force):
        try:
            info = info_of(t)
        except FileNotFoundError:
            if args.force:
                continue
            raise
        if info["type"] == "directory" and not args.recursive:
            raise IsADirectoryError(21, "is a directory (use -r)", t.text)
        t.fs.rm(t.path, recursive=args.recursive)  # type: ignore[union-attr]
    return 0


def cmd_mv(args: argparse.Namespace) -> int:
    from chainfs.cli.copy_cmd import copy_all

    sources, dst = expand(args.src), resolve(args.dst)
    if dst.is_stdio:
        raise ValueError("mv cannot move to stdout")
    if len(sources) > 1 and not is_dir(dst):
        raise NotADirectoryError(20, "moving several sources needs an existing destination directory", dst.text)
    for src in sources:
        same_cluster = src.is_chainfs and dst.is_chainfs and src.fs.address == dst.fs.address  # type: ignore[union-attr]
        if same_cluster or (not src.is_chainfs and not dst.is_chainfs):
            into = dst.text.endswith("/") or len(sources) > 1
            src.fs.mv(src.path, dst.path + ("/" if into else ""))  # type: ignore[union-attr]
            continue
        info = info_of(src)
        copy_all([src], dst if len(sources) == 1 else _into(dst), recursive=info["type"] == "directory", quiet=True)
        src.fs.rm(src.path, recursive=info["type"] == "directory")  # type: ignore[union-attr]
    return 0


def _into(t: Target) -> Target:
    return t if t.text.endswith("/") else Target(t.fs, t.path, t.text + "/")
