"""`chainfs sync SRC DST`: make DST a copy of the directory SRC, sending only what differs.

As `aws s3 sync` and `rclone sync` do: a file is up to date when its size matches and its
modification time is within MODIFY_WINDOW of the source's; every copy is given the source's mtime,
so a second sync sends nothing. `--delete` removes what DST has and SRC does not; `--dry-run`
prints the plan and changes nothing. Either side may be a chainfs URL or a local directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from chainfs.cli.copy_cmd import copy_file
from chainfs.cli.targets import Target, UsageError, human, info_of, mtime_ns, resolve, set_mtime_ns

MODIFY_WINDOW_NS = 1_000_000  # 1 ms: what a local file system and chainfs both keep exactly


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="make DST a copy of directory SRC, copying only new and changed files")
    p.add_argument("src", metavar="SRC", help="source directory: chainfs URL or local path")
    p.add_argument("dst", metavar="DST", help="destination directory (created if missing)")
    p.add_argument("--delete", action="store_true", help="remove files and directories DST has and SRC lacks")
    p.add_argument("-n", "--dry-run", action="store_true", help="print what would change; change nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file lines, only the summary")
    p.set_defaults(func=cmd_sync)


def _tree(t: Target) -> dict[str, dict[str, Any]]:
    """Relative path -> info for everything below a directory ({} when it does not exist)."""
    assert t.fs is not None
    if not t.fs.exists(t.path):
        return {}
    if info_of(t)["type"] != "directory":
        raise NotADirectoryError(20, "sync works on directories", t.text)
    found = t.fs.find(t.path, withdirs=True, detail=True)
    return {os.path.relpath(p, t.path).replace(os.sep, "/"): i for p, i in found.items()
            if os.path.relpath(p, t.path) != "."}


def cmd_sync(args: argparse.Namespace) -> int:
    src, dst = resolve(args.src), resolve(args.dst)
    if src.is_stdio or dst.is_stdio:
        raise UsageError("sync copies between directories, not stdin/stdout")
    if info_of(src)["type"] != "directory":
        raise NotADirectoryError(20, "sync works on directories", src.text)
    have, want = _tree(dst), _tree(src)
    say = (lambda line: None) if args.quiet else print
    copied = sent = deleted = same = 0
    if not args.dry_run:
        dst.fs.makedirs(dst.path, exist_ok=True)  # type: ignore[union-attr]
    for rel in sorted(want):
        info, old = want[rel], have.get(rel)
        s, d = src.descend(rel), dst.descend(rel)
        if info["type"] == "directory":
            if old is not None and old["type"] != "directory":
                say(f"delete {d.text} (a file where SRC has a directory)")
                if not args.dry_run:
                    d.fs.rm(d.path)  # type: ignore[union-attr]
                old = None
            if old is None and not args.dry_run:
                d.fs.makedirs(d.path, exist_ok=True)  # type: ignore[union-attr]
            continue
        if old is not None and old["type"] == "file" and old["size"] == info["size"] \
                and abs(mtime_ns(d, old) - mtime_ns(s, info)) <= MODIFY_WINDOW_NS:
            same += 1
            continue
        say(f"copy {s.text} -> {d.text}")
        if not args.dry_run:
            if old is not None and old["type"] == "directory":
                d.fs.rm(d.path, recursive=True)  # type: ignore[union-attr]
            sent += copy_file(s, d, info)
            set_mtime_ns(d, mtime_ns(s, info))
        else:
            sent += info["size"]
        copied += 1
    if args.delete:
        gone = [rel for rel in have if rel not in want]
        for rel in sorted(gone, reverse=True):  # children before their directories
            if any(rel.startswith(parent + "/") for parent in gone if parent != rel and have[parent]["type"] == "directory"):
                continue  # removed with its directory
            d = dst.descend(rel)
            say(f"delete {d.text}")
            if not args.dry_run:
                d.fs.rm(d.path, recursive=have[rel]["type"] == "directory")  # type: ignore[union-attr]
            deleted += 1
    verb = "would copy" if args.dry_run else "copied"
    print(f"sync: {verb} {copied} files ({human(sent)}), {'would delete' if args.dry_run else 'deleted'} "
          f"{deleted}, {same} up to date", file=sys.stderr)
    return 0
