"""A POSIX view of chainfs through FUSE (fusepy over libfuse2), built on ChainFileSystem.

Files behave as on a local file system, with close-to-open consistency across clients: writes at
any offset, truncate to any length, fsync, and mode, owner and times stored in the inode (so
`cp -a` and `rsync -a` keep them). What a path's open handles share lives in `fuse_files.OpenFile`;
a new or O_TRUNC'ed file is committed whole at its first close or fsync, an existing file is patched
in place. `statfs` reports the cluster's disks (each counted once) divided by its replication.
Symbolic and hard links are not supported (ENOTSUP). Run as `python -m chainfs.client.mount.fuse_mount
URL MOUNTPOINT` (the CLI's `chainfs mount`).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import stat
import threading
import time
from typing import Any

from fuse import FUSE, FuseOSError, Operations, fuse_get_context

from chainfs.proto import meta_pb2 as mpb

from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.client.mount.fuse_files import OpenFile, carried_attrs

log = logging.getLogger(__name__)

DIR_MODE, FILE_MODE = 0o755, 0o644
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
NO_ID = (-1, 0xFFFFFFFF)  # chown's "leave unchanged"
STATFS_BLOCK = 4096
MOUNT_RETRY_DEADLINE = 10.0  # a call on a mount waits this long for a cluster that went away


def _errno_of(exc: BaseException) -> int:
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, ValueError):
        return errno.EINVAL
    return errno.EIO


class ChainfsFuse(Operations):
    """fusepy operations mapped onto chainfs calls; OSErrors keep their errno."""

    use_ns = True  # times cross as integer nanoseconds, as chainfs stores them

    def __init__(self, fs: ChainFileSystem) -> None:
        self.fs = fs
        self._lock = threading.Lock()
        self._files: dict[str, OpenFile] = {}
        self._handles: dict[int, OpenFile] = {}
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

    # ---- open files ----

    def _attach(self, of: OpenFile) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = of
            self._files[of.path] = of
            of.handles += 1
            return fh

    def _caller_attrs(self, mode: int, default: int) -> dict[str, int]:
        """The new file's mode and owner, where they differ from what stat shows by default."""
        uid, gid, _ = fuse_get_context()
        attrs = {"mode": mode & 0o7777} if mode & 0o7777 != default else {}
        if uid != self._uid:
            attrs["uid"] = uid
        if gid != self._gid:
            attrs["gid"] = gid
        return attrs

    def _stat(self, inode: mpb.Inode) -> dict[str, Any]:
        is_dir = inode.type == mpb.DIRECTORY
        perm = (inode.mode & 0o7777) or (DIR_MODE if is_dir else FILE_MODE)
        size = 0 if is_dir else inode.length
        return {"st_mode": (stat.S_IFDIR if is_dir else stat.S_IFREG) | perm, "st_size": size,
                "st_nlink": 2 if is_dir else 1,
                "st_uid": inode.uid if inode.HasField("uid") else self._uid,
                "st_gid": inode.gid if inode.HasField("gid") else self._gid,
                "st_mtime": inode.mtime_ns, "st_ctime": inode.ctime_ns, "st_atime": inode.atime_ns or inode.mtime_ns,
                "st_blksize": 1 << 20, "st_blocks": (size + 511) // 512}

    # ---- metadata ----

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        of = self._handles.get(fh) if fh is not None else None
        if of is None:
            of = self._files.get(path)
        if of is not None and (of.busy or of.unlinked or fh is not None):
            return self._stat(of.view())
        return self._stat(self.fs.client.stat(path))

    def readdir(self, path: str, fh: int) -> list[str]:
        names = {n.rsplit("/", 1)[-1] for n in self.fs.ls(path, detail=False)}
        with self._lock:
            names |= {p.rsplit("/", 1)[-1] for p, of in self._files.items()
                      if of.session is not None and not of.unlinked and self.fs._parent(p) == path}
        return [".", "..", *sorted(names)]

    def statfs(self, path: str) -> dict[str, int]:
        space = self.fs.client.meta.space()
        copies = max(1, space.replication)
        return {"f_bsize": STATFS_BLOCK, "f_frsize": STATFS_BLOCK,
                "f_blocks": space.capacity_bytes // copies // STATFS_BLOCK,
                "f_bfree": space.free_bytes // copies // STATFS_BLOCK,
                "f_bavail": space.free_bytes // copies // STATFS_BLOCK,
                "f_files": 1 << 32, "f_ffree": 1 << 31, "f_favail": 1 << 31, "f_namemax": 255}

    def mkdir(self, path: str, mode: int) -> None:
        self.fs.mkdir(path, create_parents=False)
        attrs = self._caller_attrs(mode, DIR_MODE)
        if attrs:
            self.fs.client.meta.set_attr(path, **attrs)

    def rmdir(self, path: str) -> None:
        self.fs.rmdir(path)

    def unlink(self, path: str) -> None:
        with self._lock:
            of = self._files.pop(path, None)
        never_committed = of is not None and of.inode is None
        if of is not None:
            of.abandon()
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            if not never_committed:  # a new file that only ever existed here is gone now
                raise

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            moving = [of for p, of in self._files.items() if p == old or p.startswith(old + "/")]
        for of in moving:
            if of.session is not None:
                of.commit()  # an uncommitted file has no name in chainfs to move
        self.fs.client.rename(old, new)  # atomic; a file replaces a file
        with self._lock:
            replaced = self._files.pop(new, None)
            for p in [p for p in self._files if p == old or p.startswith(old + "/")]:
                of = self._files.pop(p)
                of.path = new + p[len(old):]
                self._files[of.path] = of
        if replaced is not None and replaced not in moving:
            replaced.abandon()

    def _set(self, path: str, **changes: int) -> None:
        of = self._files.get(path)
        if of is not None:
            of.set_attrs(changes)
        else:
            self.fs.client.meta.set_attr(path, **changes)

    def chmod(self, path: str, mode: int) -> None:
        self._set(path, mode=mode & 0o7777)

    def chown(self, path: str, uid: int, gid: int) -> None:
        changes = {k: v for k, v in (("uid", uid), ("gid", gid)) if v not in NO_ID}
        if changes:
            self._set(path, **changes)

    def utimens(self, path: str, times: Any = None) -> None:
        now = time.time_ns()
        atime, mtime = times if times is not None else (now, now)
        changes = {}
        for name, value in (("atime_ns", int(atime)), ("mtime_ns", int(mtime))):
            if value != UTIME_OMIT:  # fusepy hands over tv_sec * 1e9 + tv_nsec: 0 s + the marker
                changes[name] = now if value == UTIME_NOW else value
        if changes:
            self._set(path, **changes)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        of = self._handles.get(fh) if fh is not None else self._files.get(path)
        if of is not None:
            of.truncate(length)
            return
        of = OpenFile(self.fs, path, self.fs.client.stat(path))
        of.truncate(length)
        of.commit()

    def symlink(self, target: str, source: str) -> None:
        raise FuseOSError(errno.ENOTSUP)

    def link(self, target: str, source: str) -> None:
        raise FuseOSError(errno.ENOTSUP)

    def readlink(self, path: str) -> str:
        raise FuseOSError(errno.EINVAL)  # nothing here is a symbolic link

    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise FuseOSError(errno.ENOTSUP)

    # ---- data ----

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        of = OpenFile(self.fs, path, None)
        of.start_replace(self._caller_attrs(mode, FILE_MODE))
        return self._attach(of)

    def open(self, path: str, flags: int) -> int:
        of = self._files.get(path)
        if of is None or not of.busy:
            inode = self.fs.client.stat(path)
            if inode.type == mpb.DIRECTORY:
                raise FuseOSError(errno.EISDIR)
            if of is None:
                of = OpenFile(self.fs, path, inode)
            else:
                of.refresh(inode)  # close-to-open: a new open sees what others committed
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            of.start_replace(carried_attrs(of.inode) if of.inode is not None else {})
        return self._attach(of)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._handles[fh].read(offset, size)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return self._handles[fh].write(offset, data)

    def flush(self, path: str, fh: int) -> None:
        """close(2) sends flush and waits for it (release comes later): commit here."""
        of = self._handles.get(fh)
        if of is not None:
            of.commit()

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        """fsync(2) promises the bytes are stored: commit what was written, as close does."""
        self.flush(path, fh)

    def release(self, path: str, fh: int) -> None:
        with self._lock:
            of = self._handles.pop(fh, None)
            if of is None:
                return
            of.handles -= 1
            last = of.handles == 0
        if not last:
            return
        try:
            of.commit()
        finally:
            with self._lock:
                if of.handles == 0 and self._files.get(of.path) is of and not of.busy:
                    del self._files[of.path]

    def destroy(self, path: str) -> None:
        for of in list(self._files.values()):
            try:
                of.commit()
            except OSError as exc:
                log.warning("unmount: could not commit %s: %s", of.path, exc)


def mount(url: str, mountpoint: str, foreground: bool = True, debug: bool = False) -> None:
    """Mounts `url` (chainfs://HOST:PORT[/path]) at `mountpoint`; returns once it is unmounted."""
    from chainfs.client.url import parse_url

    parsed = parse_url(url)
    fs = ChainFileSystem(address=parsed.address, retry_deadline=MOUNT_RETRY_DEADLINE)
    fs.client.meta.probe(1.0)  # fail now, naming the address, if the cluster is unreachable
    fs.info(parsed.path)
    ops: Operations = ChainfsFuse(fs) if parsed.path == "/" else _Rooted(fs, parsed.path)
    FUSE(ops, mountpoint, foreground=foreground, nothreads=False, big_writes=True, max_read=1 << 20,
         max_write=1 << 20, fsname=f"chainfs#{parsed.address}", subtype="chainfs", debug=debug,
         default_permissions=True)


class _Rooted(ChainfsFuse):
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
    parser.add_argument("url", help="chainfs://HOST:PORT[/path]")
    parser.add_argument("mountpoint", help="an existing directory")
    parser.add_argument("--debug", action="store_true", help="log every FUSE call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    mount(args.url, args.mountpoint, foreground=True, debug=args.debug)
    # Unmounted: end now, even if a call to a vanished cluster is still retrying in a thread.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
