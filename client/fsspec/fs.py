"""ChainFileSystem: chainfs as an fsspec filesystem, protocol `chainfs`.

    fs = fsspec.filesystem("chainfs", host="127.0.0.1", port=PORT)
    with fsspec.open("chainfs://127.0.0.1:PORT/data/x.bin", "rb") as f: ...

Paths inside the filesystem are absolute ("/a/b"); URLs carry the metaserver's HOST:PORT. Instances
hold only their options (so they pickle); the gRPC client behind them is shared by every instance of
the same cluster in a process and rebuilt after a fork. Under gevent (locust), gRPC is switched to
gevent-cooperative polling when monkey-patching is active (see `gevent_setup.init_gevent_if_patched`).
Each operation costs one metadata RPC where one suffices: `info_many`, multi-path `cat`, `cat_ranges`
and multi-file `pipe` stat, open or close all their files in one batched call; reads of many ranges,
across chunks and files, go out as one batched read per storage node.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime
from typing import Any, Iterable

from fsspec.spec import AbstractFileSystem
from fsspec.utils import stringify_path
from fsspec.implementations.local import trailing_sep
from glob import has_magic

from chainfs.common import config
from chainfs.common.addresses import split_address
from chainfs.common.paths import checked_path
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.files.chainclient import ChainClient
from chainfs.client.fsspec.fs_file import ChainfsFile
from chainfs.client.fsspec.clients import PROTOCOL, shared_client
from chainfs.client.fsspec.gevent_setup import init_gevent_if_patched
from chainfs.client.fsspec.info import join, to_datetime, to_info, to_inode
from chainfs.client.url import ADDRESS_ENV, parse_url

log = logging.getLogger(__name__)



class ChainFileSystem(AbstractFileSystem):
    """fsspec filesystem over one chainfs cluster (its metaserver's HOST:PORT)."""

    protocol = PROTOCOL
    root_marker = "/"
    blocksize = 8 * config.MiB  # write buffer, and the least read-ahead window

    def __init__(self, host: str | None = None, port: int | str | None = None, address: str | None = None,
                 retry_deadline: float = 30.0, block_size: int | None = None,
                 lease_renew_s: float = config.WRITE_SESSION_LEASE / 3, list_page_size: int = 0,
                 meta_timeout: float = config.META_RPC_TIMEOUT, short_circuit: bool = True,
                 tls: str | bool | None = None, token: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("use_listings_cache", False)  # fresh listings: other clients write too
        super().__init__(**kwargs)
        init_gevent_if_patched()
        self.address = _resolve_address(host, port, address)
        self.retry_deadline = float(retry_deadline)
        self.meta_timeout = float(meta_timeout)  # each metadata call's deadline (retries within retry_deadline)
        self.lease_renew_s = float(lease_renew_s)
        self.list_page_size = int(list_page_size)  # 0: the server's page size
        self.short_circuit = bool(short_circuit)   # read local replicas' chunk files directly
        self.tls = str(tls) if tls not in (None, True, False) else tls  # a TLS dir; None: look it up
        self.token = token or None  # a token; None: look it up (common/auth.resolve)
        if block_size:
            self.blocksize = int(block_size)

    # ---- identity and paths ----

    @property
    def client(self) -> ChainClient:
        """The process-wide client of this cluster (created on first use, rebuilt after fork)."""
        return shared_client(self.address, self.retry_deadline, self.meta_timeout, self.short_circuit, self.tls,
                             self.token)

    @property
    def fsid(self) -> str:
        return f"{PROTOCOL}_{self.address}"

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, (list, tuple)):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        prefix = f"{PROTOCOL}://"
        if path.startswith(prefix):
            path = "/" + path[len(prefix):].partition("/")[2]  # drop HOST:PORT
        return checked_path(path)

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        path = stringify_path(path)
        if not path.startswith(f"{PROTOCOL}://") or path.startswith(f"{PROTOCOL}:///"):
            return {}
        url = parse_url(path)  # ValueError naming a malformed URL
        return {"address": url.address}

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self.address}{self._strip_protocol(name)}"

    def __repr__(self) -> str:
        return f"<ChainFileSystem {self.address}>"

    # ---- metadata ----

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        return to_info(path, self.client.stat(path))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        path = self._strip_protocol(path)
        entries = self._ls_from_cache(path) if self.dircache.use_listings_cache else None
        if entries is None:
            try:
                entries = [to_info(join(path, e.name), e.inode)
                           for e in self.client.meta.list(path, self.list_page_size)]
                self.dircache[path] = entries
            except NotADirectoryError:
                entries = [self.info(path)]  # ls(file) gives that file
        return entries if detail else [e["name"] for e in entries]

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
            return True
        except FileNotFoundError:
            return False

    def created(self, path: str) -> datetime:
        return to_datetime(self.info(path)["created"])

    def modified(self, path: str) -> datetime:
        return to_datetime(self.info(path)["mtime"])

    def ukey(self, path: str) -> str:
        """Changes whenever the content may have: a rewrite makes a new inode, an append a new length."""
        info = self.info(path)
        return hashlib.sha256(f"{info['ino']}:{info['size']}:{info['mtime_ns']}".encode()).hexdigest()

    def checksum(self, path: str) -> int:
        return int(self.ukey(path)[:32], 16)

    def invalidate_cache(self, path: str | None = None) -> None:
        if path is None:
            self.dircache.clear()
        else:
            path = self._strip_protocol(path)
            while True:
                self.dircache.pop(path, None)
                if path == "/":
                    break
                path = self._parent(path)
        super().invalidate_cache(path)

    # ---- directories ----

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        try:
            self.client.mkdir(path, parents=False)
        except FileNotFoundError:
            if not create_parents:
                raise
            self.client.mkdir(path, parents=True)
        self.invalidate_cache(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if exist_ok:
            self.client.mkdir(path, parents=True)  # an existing file there still fails
        else:
            self.mkdir(path, create_parents=True)
        self.invalidate_cache(path)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self.info(path)["type"] != "directory":
            raise NotADirectoryError(20, "not a directory", path)
        self.client.rm(path, recursive=False)
        self.invalidate_cache(path)

    # ---- removing, copying, moving ----

    def rm_file(self, path: str) -> None:
        """Removes a file, or an empty directory."""
        path = self._strip_protocol(path)
        self.client.rm(path, recursive=False)
        self.invalidate_cache(path)

    _rm = rm_file

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        """One Remove RPC per named path: a recursive one removes its whole subtree in one batch."""
        if maxdepth is not None:
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)
        paths = self._expand_roots(path)
        if recursive:  # a path inside another named path goes with it
            paths = [p for p in paths if not any(p.startswith(q.rstrip("/") + "/") for q in paths if q != p)]
        for p in sorted(set(paths), key=len, reverse=True):
            self.client.rm(p, recursive=recursive)
            self.invalidate_cache(p)
        return None

    def _expand_roots(self, path: str | list[str]) -> list[str]:
        found: list[str] = []
        for p in [path] if isinstance(path, str) else path:
            if has_magic(str(p)):
                matches = self.glob(p)
                if not matches:
                    raise FileNotFoundError(2, "no such file or directory", p)
                found.extend(matches)
            else:
                found.append(self._strip_protocol(p))
        return found

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copies a file (through the client, chunk windows at a time) or creates a directory."""
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        info = self.info(path1)
        if info["type"] == "directory":
            self.makedirs(path2, exist_ok=True)
            return
        inode = to_inode(info)
        with self.open(path2, "wb") as out:
            for piece in self.client.iter_read(inode, path=path1):
                out.write(piece)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """A single path moves by one atomic, server-side rename (a file replaces a file)."""
        single = isinstance(path1, str) and isinstance(path2, str) and not has_magic(path1)
        if not single or maxdepth is not None:
            return super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if src == dst:
            return None
        if trailing_sep(path2) or self.isdir(dst):
            dst = join(dst, src.rsplit("/", 1)[-1])
        try:
            self.client.rename(src, dst)
        except FileNotFoundError:
            if not self.exists(src) or self.exists(self._parent(dst)):
                raise
            self.makedirs(self._parent(dst), exist_ok=True)  # parents appear implicitly, as on write
            self.client.rename(src, dst)
        self.invalidate_cache(src)
        self.invalidate_cache(dst)
        return None

    # ---- reading ----

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        info = self.info(path)
        if info["type"] == "directory":
            raise IsADirectoryError(21, "is a directory", path)
        lo, hi = _resolve_range(start, end, info["size"])
        return self.client.read_ranges([(to_inode(info), lo, hi)])[0]

    def cat_ranges(self, paths: list[str], starts: Any, ends: Any, max_gap: int | None = None,
                   on_error: str = "return", **kwargs: Any) -> list:
        """All ranges of all files in one stat per file and batched reads per storage node."""
        if not isinstance(paths, list):
            raise TypeError("paths must be a list")
        starts = starts if isinstance(starts, list) else [starts] * len(paths)
        ends = ends if isinstance(ends, list) else [ends] * len(paths)
        if len(starts) != len(paths) or len(ends) != len(paths):
            raise ValueError("paths, starts and ends must have the same length")
        infos = self._stat_many([self._strip_protocol(p) for p in paths])
        return self._cat_ranges_of(paths, starts, ends, infos, on_error)

    def _cat_ranges_of(self, paths: list[str], starts: list, ends: list, infos: dict[str, dict | Exception],
                       on_error: str) -> list:
        """cat_ranges for paths already stat'ed (so `cat` does not stat every path twice)."""
        out: list[Any] = [None] * len(paths)
        wanted: list[tuple[int, mpb.Inode, int, int]] = []
        for k, (p, s, e) in enumerate(zip(paths, starts, ends)):
            info = infos[self._strip_protocol(p)]
            if isinstance(info, dict) and info["type"] == "directory":
                info = IsADirectoryError(21, "is a directory", self._strip_protocol(p))
            if isinstance(info, Exception):
                if on_error != "return":
                    raise info
                out[k] = info
                continue
            lo, hi = _resolve_range(s, e, info["size"])
            wanted.append((k, to_inode(info), lo, hi))
        for (k, *_), data in zip(wanted, self.client.read_ranges([w[1:] for w in wanted])):
            out[k] = data
        return out

    def cat(self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any) -> Any:
        paths = self.expand_path(path, recursive=recursive)
        if len(paths) == 1 and not isinstance(path, list) and paths[0] == self._strip_protocol(path):
            return self.cat_file(paths[0], **kwargs)
        infos = self._stat_many(paths)
        files = [p for p in paths if not (isinstance(infos[p], dict) and infos[p]["type"] == "directory")]
        results = self._cat_ranges_of(files, [kwargs.get("start")] * len(files), [kwargs.get("end")] * len(files),
                                      infos, on_error="return")
        out: dict[str, Any] = {}
        for p, data in zip(files, results):
            if isinstance(data, Exception):
                if on_error == "raise":
                    raise data
                if on_error == "omit":
                    continue
            out[p] = data
        return out

    def info_many(self, paths: list[str]) -> list[dict[str, Any] | Exception]:
        """`info` of every path in one metadata round trip: each info dict, or its exception."""
        clean = [self._strip_protocol(p) for p in paths]
        return [r if isinstance(r, Exception) else to_info(p, r)
                for p, r in zip(clean, self.client.stat_many(clean))]

    def _stat_many(self, paths: Iterable[str]) -> dict[str, dict | Exception]:
        unique = list(dict.fromkeys(paths))
        if len(unique) <= 1:
            return {p: self._info_or_error(p) for p in unique}
        return dict(zip(unique, self.info_many(unique)))

    def _info_or_error(self, path: str) -> dict | Exception:
        try:
            return self.info(path)
        except OSError as exc:
            return exc

    # ---- writing ----

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs: Any) -> ChainfsFile:
        return ChainfsFile(self, self._strip_protocol(path), mode=mode, block_size=block_size,
                         autocommit=autocommit, cache_options=cache_options, **kwargs)

    def pipe(self, path: str | dict[str, bytes], value: bytes | None = None, **kwargs: Any) -> None:
        """Many files in one batched open and one batched close, their chunks written in parallel
        (each file still appears whole); one file as pipe_file does. The first failure is raised
        after every other file has been written."""
        items = path if isinstance(path, dict) else {path: value}
        if len(items) <= 1 or self._intrans or set(kwargs) - {"mode"}:
            for p, v in items.items():
                self.pipe_file(p, v, **kwargs)
            return
        mode = mpb.CREATE_NEW if kwargs.get("mode") == "create" else mpb.REPLACE
        files = {self._strip_protocol(p): v for p, v in items.items()}
        results = self.client.write_files(files, mode=mode)
        for p in files:
            self.invalidate_cache(p)
        for result in results:
            if isinstance(result, Exception):
                raise result

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Writes a whole file atomically; mode='create' fails with FileExistsError if it exists."""
        path = self._strip_protocol(path)
        if self._intrans:  # deferred with the transaction's other writes
            with self.open(path, "xb" if mode == "create" else "wb", **kwargs) as f:
                f.write(value)
            return
        self.client.write_file(path, value, mode=mpb.CREATE_NEW if mode == "create" else mpb.REPLACE)
        self.invalidate_cache(path)

    def set_attrs(self, path: str, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                  ns: tuple[int, int] | None = None) -> dict[str, Any]:
        """chmod/chown/utime in one metadata call (`ns` = (atime, mtime) as os.utime takes them)."""
        path = self._strip_protocol(path)
        changes = {k: v for k, v in (("mode", mode), ("uid", uid), ("gid", gid)) if v is not None}
        if ns is not None:
            changes["atime_ns"], changes["mtime_ns"] = int(ns[0]), int(ns[1])
        info = to_info(path, self.client.meta.set_attr(path, **changes))
        self.invalidate_cache(path)
        return info

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        """truncate=True writes an empty file; otherwise creates one only if missing."""
        path = self._strip_protocol(path)
        if truncate or self._intrans:
            self.pipe_file(path, b"")
        else:
            self.client.meta.create(path, parents=True)
        self.invalidate_cache(path)


def _resolve_range(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """fsspec range rules: None is an open end, negatives count from the end of the file."""
    lo = 0 if start is None else (max(0, size + start) if start < 0 else min(start, size))
    hi = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
    return lo, max(lo, hi)


def _resolve_address(host: str | None, port: int | str | None, address: str | None) -> str:
    """The metaservers' HOST:PORT[,HOST:PORT...] from the options, or from $CHAINFS_ADDRESS."""
    if address is None and host is not None:
        address = f"{host}:{port}" if port is not None else str(host)
    if address is None:
        address = os.environ.get(ADDRESS_ENV)
    if not address:
        raise ValueError(f"chainfs needs the metaserver address: host=, port= (or ${ADDRESS_ENV})")
    out = []
    for one in address.split(","):  # several metaservers of one cluster: "h1:p1,h2:p2"
        host_part, port_num = split_address(one.strip())
        out.append(f"{host_part}:{port_num}")
    return ",".join(out)
