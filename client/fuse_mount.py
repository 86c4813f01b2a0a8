"""A POSIX view of chainfs through FUSE (fusepy over libfuse2), built on ChainFileSystem.

Files are written whole, the chainfs way: a file opened for writing (create, O_TRUNC, O_APPEND) is
a write session; sequential writes stream into it and the file is committed on the first flush
(close), so a `cp` into the mount is visible to every client as soon as `cp` returns. Writes at an
arbitrary offset into an existing file are refused with EOPNOTSUPP. Reads use the filesystem's
read-ahead. Run as `python -m chainfs.client.fuse_mount URL MOUNTPOINT` (the CLI's `chainfs mount`).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fuse import FUSE, FuseOSError, Operations

from chainfs.client.fs import ChainFileSystem
from chainfs.client.fs_file import ChainFile

log = logging.getLogger(__name__)


@dataclass
class _Handle:
    path: str
    file: ChainFile
    writing: bool
    pos: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _errno_of(exc: BaseException) -> int:
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, ValueError):
        return errno.EINVAL
    return errno.EIO


class ChainFuse(Operations):
    """fusepy operations mapped onto ChainFileSystem calls; OSErrors keep their errno."""

    def __init__(self, fs: ChainFileSystem) -> None:
        self.fs = fs
        self._lock = threading.Lock()
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._uid, self._gid = os.getuid(), os.getgid()

    def __call__(self, op: str, *args: Any) -> Any:
        try:
            return super().__call__(op, *args)
        except FuseOSError:
            raise
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.debug("%s%r failed: %s", op, args[:1], exc)
            raise FuseOSError(_errno_of(exc)) from None

    # ---- handles ----

    def _add(self, handle: _Handle) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = handle
            return fh

    def _writer_of(self, path: str) -> _Handle | None:
        with self._lock:
            return next((h for h in self._handles.values() if h.writing and h.path == path), None)

    def _stat(self, kind: int, perm: int, size: int, mtime: float, ctime: float) -> dict[str, Any]:
        return {"st_mode": kind | perm, "st_size": size, "st_nlink": 2 if kind == stat.S_IFDIR else 1,
                "st_uid": self._uid, "st_gid": self._gid, "st_mtime": mtime, "st_ctime": ctime,
                "st_atime": mtime, "st_blksize": 1 << 20, "st_blocks": (size + 511) // 512}

    # ---- metadata ----

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        writer = self._writer_of(path)
        if writer is not None and not writer.file.closed:  # not visible in chainfs until committed
            now = time.time()
            return self._stat(stat.S_IFREG, 0o644, writer.pos, now, now)
        info = self.fs.info(path)
        if info["type"] == "directory":
            return self._stat(stat.S_IFDIR, 0o755, 0, info["mtime"], info["created"])
        return self._stat(stat.S_IFREG, (info["mode"] & 0o777) or 0o644, info["size"], info["mtime"],
                          info["created"])

    def readdir(self, path: str, fh: int) -> list[str]:
        names = [n.rsplit("/", 1)[-1] for n in self.fs.ls(path, detail=False)]
        with self._lock:
            pending = {h.path.rsplit("/", 1)[-1] for h in self._handles.values()
                       if h.writing and self.fs._parent(h.path) == path}
        return [".", "..", *sorted(set(names) | pending)]

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 1 << 20, "f_frsize": 1 << 20, "f_blocks": 1 << 24, "f_bfree": 1 << 23,
                "f_bavail": 1 << 23, "f_files": 1 << 30, "f_ffree": 1 << 29, "f_namemax": 255}

    def mkdir(self, path: str, mode: int) -> None:
        self.fs.mkdir(path, create_parents=False)

    def rmdir(self, path: str) -> None:
        self.fs.rmdir(path)

    def unlink(self, path: str) -> None:
        self.fs.rm_file(path)

    def rename(self, old: str, new: str) -> None:
        self.fs.client.rename(old, new)  # atomic; a file replaces a file

    def chmod(self, path: str, mode: int) -> None:
        return None  # permission bits are not enforced by chainfs

    def chown(self, path: str, uid: int, gid: int) -> None:
        return None

    def utimens(self, path: str, times: Any = None) -> None:
        return None  # times are the server's

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        writer = self._writer_of(path)
        if writer is not None and length == writer.pos:
            return
        if writer is None and length == 0:
            self.fs.pipe_file(path, b"")
            return
        if writer is None and self.fs.info(path)["size"] == length:
            return
        raise FuseOSError(errno.EOPNOTSUPP)

    # ---- data ----

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._add(_Handle(path, self.fs.open(path, "wb"), writing=True))

    def open(self, path: str, flags: int) -> int:
        access = flags & os.O_ACCMODE
        if access == os.O_RDONLY:
            return self._add(_Handle(path, self.fs.open(path, "rb"), writing=False))
        if flags & os.O_APPEND:
            f = self.fs.open(path, "ab")
            return self._add(_Handle(path, f, writing=True, pos=f.loc))
        if flags & os.O_TRUNC or self.fs.info(path)["size"] == 0:
            return self._add(_Handle(path, self.fs.open(path, "wb"), writing=True))
        raise FuseOSError(errno.EOPNOTSUPP)  # rewriting an existing file in place

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        h = self._handles[fh]
        if h.writing:
            raise FuseOSError(errno.EBADF)
        with h.lock:
            h.file.seek(offset)
            return h.file.read(size)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        h = self._handles[fh]
        if not h.writing:
            raise FuseOSError(errno.EBADF)
        with h.lock:
            if offset != h.pos:
                raise FuseOSError(errno.EOPNOTSUPP)  # chainfs files are written sequentially
            if h.file.closed:  # written again after a flush committed it: continue as an append
                h.file = self.fs.open(path, "ab")
            h.file.write(data)
            h.pos += len(data)
            return len(data)

    def flush(self, path: str, fh: int) -> None:
        """close(2) sends flush and waits for it; release comes later, so commit here."""
        h = self._handles.get(fh)
        if h is not None and h.writing:
            with h.lock:
                if not h.file.closed:
                    h.file.close()

    def release(self, path: str, fh: int) -> None:
        with self._lock:
            h = self._handles.pop(fh, None)
        if h is not None and not h.file.closed:
            with h.lock:
                h.file.close()

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        """fsync(2) promises the bytes are stored: commit what was written, as close does (later
        writes to the handle reopen the file for append)."""
        self.flush(path, fh)


def mount(url: str, mountpoint: str, foreground: bool = True, debug: bool = False) -> None:
    """Mounts `url` (chainfs://HOST:PORT[/path]) at `mountpoint`; returns once it is unmounted."""
    from chainfs.client.url import parse_url

    parsed = parse_url(url)
    fs = ChainFileSystem(address=parsed.address)
    fs.info(parsed.path)  # fail now, naming the address, if the cluster is unreachable
    ops: Operations = ChainFuse(fs) if parsed.path == "/" else _Rooted(fs, parsed.path)
    FUSE(ops, mountpoint, foreground=foreground, nothreads=False, big_writes=True, max_read=1 << 20,
         max_write=1 << 20, fsname=f"chainfs#{parsed.address}", subtype="chainfs", debug=debug)


class _Rooted(ChainFuse):
    """A mount of a subdirectory: every path is taken below `root`."""

    def __init__(self, fs: ChainFileSystem, root: str) -> None:
        super().__init__(fs)
        self.root = root.rstrip("/")

    def __call__(self, op: str, *args: Any) -> Any:
        if args and isinstance(args[0], str) and args[0].startswith("/"):
            args = (self.root + args[0].rstrip("/") if args[0] != "/" else self.root, *args[1:])
            if op == "rename":
                args = (args[0], self.root + args[1], *args[2:])
        return super().__call__(op, *args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chainfs-fuse", description="mount chainfs through FUSE")
    parser.add_argument("url")
    parser.add_argument("mountpoint")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    mount(args.url, args.mountpoint, foreground=True, debug=args.debug)


if __name__ == "__main__":
    main()
