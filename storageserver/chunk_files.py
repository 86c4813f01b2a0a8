"""Chunk files on disk: whole-file writes, staged files filled in place, and their fsyncs.

`ChunkStore` decides which file holds which version; this module only moves bytes into files and
makes them durable, mapping OS failures to the error table (a full disk is NO_SPACE).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from pathlib import Path
from typing import BinaryIO

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.storageserver.chunk_ids import ChunkKey

log = logging.getLogger(__name__)

_COPY_BYTES = 1 << 20

DataSource = bytes | bytearray | memoryview | BinaryIO


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def write_file(path: Path, data: DataSource, *, fsync: bool) -> int:
    """Writes a chunk file whole (fsynced with its directory when `fsync`); returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    size = 0
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data).cast("B")
            while size < len(view):
                size += os.write(fd, view[size:])
        else:
            buf = bytearray(_COPY_BYTES)
            while True:
                n = data.readinto(buf)  # type: ignore[attr-defined]
                if not n:
                    break
                view = memoryview(buf)[:n]
                done = 0
                while done < n:
                    done += os.write(fd, view[done:])
                size += n
        if size > config.MAX_CHUNK_SIZE:
            raise ChainfsError(Reason.TOO_LARGE, f"chunk data of {size} bytes exceeds the maximum")
        if fsync:
            os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        unlink(path)
        if isinstance(exc, OSError):
            raise storage_error(path, exc) from exc
        raise
    os.close(fd)
    if fsync:
        fsync_dir(path.parent)
    return size


def storage_error(path: Path, exc: OSError) -> ChainfsError:
    reason = Reason.NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Reason.IO_ERROR
    log.error("writing %s failed: %s", path, exc)
    return ChainfsError(reason, f"cannot store chunk data: {exc.strerror}")


class Staging:
    """A pending chunk file mapped for writing. Its blocks are allocated up front (fallocate), so
    a full disk is an ENOSPC here, never a SIGBUS while the mapping is filled."""

    def __init__(self, key: ChunkKey, version: int, path: Path, length: int, *, fsync: bool) -> None:
        self.key, self.version, self.path, self.fsync = key, version, path, fsync
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._map: mmap.mmap | None = None
        try:
            if length:
                os.posix_fallocate(self.fd, 0, length)
                self._map = mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except OSError as exc:
            self.discard()
            raise storage_error(path, exc) from exc
        self.view = memoryview(self._map) if self._map is not None else memoryview(bytearray())

    def sync(self) -> None:
        """Makes the filled file durable (with its directory entry)."""
        if not self.fsync:
            return
        try:
            os.fsync(self.fd)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise storage_error(self.path, exc) from exc

    def discard(self) -> None:
        self.close()
        unlink(self.path)

    def close(self) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)  # the mapping keeps its own reference to the file
        self.fd = -1
        try:
            self.view.release()
            if self._map is not None:
                self._map.close()
        except BufferError:
            # A slice of the data is still referenced (a forward that failed mid-stream): the
            # mapping goes when the last reference does.
            pass
        self._map = None
