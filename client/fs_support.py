"""What the fsspec filesystem shares per process: clients, gevent setup, path and info helpers.

fsspec caches one filesystem instance per thread (per greenlet under gevent), so instances must be
cheap: they hold only their storage options, and every instance of the same cluster in a process
shares one ChainClient (and through it one gRPC channel per server), rebuilt after a fork.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import datetime, timezone
from typing import Any

from chainfs.common import config
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.chainclient import ChainClient
from chainfs.client.url import ADDRESS_ENV  # noqa: F401 - default cluster for `chainfs:///path`

log = logging.getLogger(__name__)

PROTOCOL = "chainfs"

_lock = threading.Lock()
_clients: dict[tuple[str, float, float, bool], ChainClient] = {}
_clients_pid = os.getpid()
_gevent_ready = False


def init_gevent_if_patched() -> bool:
    """Lets gRPC cooperate with gevent's hub, when (and only when) gevent has monkey-patched.

    grpc's gevent integration must run after `gevent.monkey.patch_all()` and before any gRPC
    channel exists; chainfs creates channels lazily, so calling this from the filesystem's
    constructor is early enough for locust (which patches at import). Without patching, nothing
    changes: plain threads keep the default gRPC polling.
    """
    global _gevent_ready
    if _gevent_ready or "gevent" not in sys.modules:
        return _gevent_ready
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - a module named gevent without gevent.monkey
        return False
    if not monkey.is_module_patched("socket"):
        return False
    with _lock:
        if not _gevent_ready:
            import grpc.experimental.gevent as grpc_gevent

            grpc_gevent.init_gevent()
            _gevent_ready = True
            log.debug("gRPC switched to gevent-cooperative polling")
    return True


def shared_client(address: str, retry_deadline: float, meta_timeout: float = config.META_RPC_TIMEOUT,
                  short_circuit: bool = True, tls: str | bool | None = None) -> ChainClient:
    """The process-wide client of one cluster: shared by every instance and greenlet."""
    global _clients, _clients_pid
    with _lock:
        if _clients_pid != os.getpid():  # a forked child must not reuse its parent's objects
            _clients, _clients_pid = {}, os.getpid()
        key = (address, retry_deadline, meta_timeout, short_circuit, tls)
        client = _clients.get(key)
        if client is None:
            client = ChainClient(address, meta_timeout=meta_timeout, retry_deadline=retry_deadline,
                                 short_circuit=short_circuit, tls=tls)
            _clients[key] = client
        return client


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
