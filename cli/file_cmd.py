"""File commands on `chainfs://HOST:PORT/path` URLs: put, get, ls, rm, mkdir, stat, cat."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chainfs.client import ChainClient, parse_url
from chainfs.proto import meta_pb2 as mpb

# How long a command keeps retrying an unreachable cluster before it names the address and fails.
CLI_RETRY_DEADLINE = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("put", help="copy a local file into chainfs")
    p.add_argument("local")
    p.add_argument("url")
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("get", help="copy a chainfs file to a local path")
    p.add_argument("url")
    p.add_argument("local")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("ls", help="list a directory (or show a file)")
    p.add_argument("url")
    p.add_argument("-l", "--long", action="store_true", help="sizes, types and times")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("rm", help="remove a file, or a directory with -r")
    p.add_argument("url")
    p.add_argument("-r", "--recursive", action="store_true")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("mkdir", help="create a directory")
    p.add_argument("url")
    p.add_argument("-p", "--parents", action="store_true")
    p.set_defaults(func=cmd_mkdir)

    p = sub.add_parser("stat", help="show an inode")
    p.add_argument("url")
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("cat", help="write a file's bytes to stdout")
    p.add_argument("url")
    p.set_defaults(func=cmd_cat)


def _client(url: str) -> tuple[ChainClient, str]:
    parsed = parse_url(url)
    return ChainClient(parsed.address, retry_deadline=CLI_RETRY_DEADLINE), parsed.path


def cmd_put(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    local = Path(args.local)
    if local.is_dir():
        raise IsADirectoryError(21, "is a directory", str(local))
    with open(local, "rb") as f:
        inode = client.write_file(path, f)
    print(f"{args.url}: {inode.length} bytes")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    local = Path(args.local)
    if local.is_dir():
        local = local / (Path(path).name or "root")
    tmp = local.with_name(f".{local.name}.chainfs-part")
    try:
        with open(tmp, "wb") as out:
            written = client.get_file(path, out)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{local}: {written} bytes")
    return 0


def _kind(inode: mpb.Inode) -> str:
    return "dir" if inode.type == mpb.DIRECTORY else "file"


def cmd_ls(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    inode = client.stat(path)
    entries = [mpb.DirEntry(name=Path(path).name, inode=inode)] if inode.type == mpb.FILE else client.ls(path)
    if not args.long:
        for e in entries:
            print(e.name + ("/" if e.inode.type == mpb.DIRECTORY else ""))
        return 0
    table = Table(box=None, show_header=True)
    for col in ("type", "size", "modified", "name"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for e in entries:
        modified = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.inode.mtime_ns / 1e9))
        table.add_row(_kind(e.inode), str(e.inode.length), modified, e.name)
    Console().print(table)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    client.rm(path, recursive=args.recursive)
    return 0


def cmd_mkdir(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    client.mkdir(path, parents=args.parents)
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    inode = client.stat(path)
    layout = inode.layout
    print(f"path: {path}\ntype: {_kind(inode)}\ninode: {inode.id}\nsize: {inode.length}\n"
          f"chunk_size: {layout.chunk_size}\nstripe_width: {layout.stripe_width}\n"
          f"replication: {layout.replication}\nchains: {list(layout.chains)}\n"
          f"mtime: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(inode.mtime_ns / 1e9))}")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    client, path = _client(args.url)
    out = sys.stdout.buffer
    for piece in client.iter_read(client.stat(path), path=path):
        out.write(piece)
    out.flush()
    return 0
