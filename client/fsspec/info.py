"""fsspec's view of chainfs metadata: info dicts from inodes and back, paths joined."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from chainfs.proto import meta_pb2 as mpb


def join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def to_info(path: str, inode: mpb.Inode) -> dict[str, Any]:
    """An fsspec info dict; it carries what a reader needs, so opening a file costs one stat."""
    is_dir = inode.type == mpb.DIRECTORY
    return {
        "name": path,
        "size": 0 if is_dir else int(inode.length),
        "type": "directory" if is_dir else "file",
        "ino": int(inode.id),
        "created": inode.ctime_ns / 1e9,
        "mtime": inode.mtime_ns / 1e9,
        "mtime_ns": int(inode.mtime_ns),
        "mode": int(inode.mode),
        "uid": int(inode.uid) if inode.HasField("uid") else None,
        "gid": int(inode.gid) if inode.HasField("gid") else None,
        "atime": (inode.atime_ns or inode.mtime_ns) / 1e9,
        "chunk_size": int(inode.layout.chunk_size),
        "chains": [int(c) for c in inode.layout.chains],
    }


def to_inode(info: dict[str, Any]) -> mpb.Inode:
    """Rebuilds the parts of an inode that reads need, from an info dict."""
    kind = mpb.DIRECTORY if info["type"] == "directory" else mpb.FILE
    layout = mpb.Layout(chunk_size=info["chunk_size"], chains=info["chains"])
    return mpb.Inode(id=info["ino"], type=kind, length=info["size"], layout=layout)


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
