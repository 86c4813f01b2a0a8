"""How the block store reaches its filesystem: stat, read, write and remove many block files at once.

Why backends: the KV path is a handful of batched calls, and each filesystem has its own fastest
way to make them. On chainfs a lookup is ONE `StatMany` round trip whatever the number of blocks,
a load reuses those inodes (no second stat) and reads every block in one batched call per storage
node, and a store is one `OpenWriteMany`, parallel chunk writes and one `CloseWriteMany`. On the
local filesystem the same calls are plain `os.stat`/`open`/`os.replace`. Any other fsspec
filesystem gets the generic calls (`info`, multi-path `cat`, multi-file `pipe`).

A `BlockRef` is what one stat told us about a block file (a segment of one or more blocks, see
`segments.py`), or a byte range of one (`offset`, `size`). Blocks never change once written (their
path is their content's key), so a ref stays good until the file is removed; a read through a ref
whose file vanished reports the block missing, never other bytes.
"""

from __future__ import annotations

import mmap
import os
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import fsspec
from fsspec.implementations.local import LocalFileSystem


@dataclass(frozen=True)
class BlockRef:
    path: str
    size: int  # bytes: of the whole file (a stat), or of the range from `offset`
    handle: Any = None  # chainfs: the file's Inode (id, layout, length)
    offset: int = 0  # where the range starts in the file


HUGE_BATCH = 4 << 20  # a batch at least this big is read into one mapping backed by huge pages


def batch_buffers(sizes: Sequence[int]) -> list[memoryview]:
    """Writable buffers of `sizes` for one batched read, views of one allocation.

    Why: first-touch page faults of fresh memory cost more than the read itself here (22 ms for
    32 MiB in 4 KiB pages against under 5 ms in 2 MiB transparent huge pages), so a large batch
    lands in one anonymous mapping advised MADV_HUGEPAGE. The mapping lives as long as any of
    its views (or arrays made from them)."""
    total = sum(sizes)
    if total >= HUGE_BATCH and hasattr(mmap, "MADV_HUGEPAGE"):
        area = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            area.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages: plain pages still work
            pass
        whole = memoryview(area)
    else:
        whole = memoryview(bytearray(total))
    out, at = [], 0
    for size in sizes:
        out.append(whole[at:at + size])
        at += size
    return out


class Backend:
    """The generic fsspec way (one call per block where fsspec has no batch)."""

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs

    def stat_many(self, paths: Sequence[str]) -> list[BlockRef | Exception]:
        out: list[BlockRef | Exception] = []
        for path in paths:
            try:
                info = self.fs.info(path)
                out.append(BlockRef(path, int(info.get("size") or 0)))
            except Exception as exc:  # noqa: BLE001 - reported per block
                out.append(exc)
        return out

    def read_many(self, refs: Sequence[BlockRef]) -> list[bytes | Exception]:
        """Each ref's byte range (`size` bytes from `offset`), or its failure; a range the file
        does not hold whole is an error, never fewer bytes."""
        paths = [r.path for r in refs]
        data = self.fs.cat_ranges(paths, [r.offset for r in refs], [r.offset + r.size for r in refs],
                                  on_error="return")
        return [_whole(r, d) for r, d in zip(refs, data)]

    def read_many_into(self, refs: Sequence[BlockRef], views: Sequence[memoryview]) -> list[Exception | None]:
        """Reads each ref's range into its view (writable, ref.size bytes): None or the failure.
        Here: read, then copy; the backends below read in place."""
        out: list[Exception | None] = []
        for blob, view in zip(self.read_many(refs), views):
            if not isinstance(blob, Exception):
                view[:] = memoryview(blob).cast("B")
            out.append(blob if isinstance(blob, Exception) else None)
        return out

    def write_many(self, blobs: dict[str, bytes | bytearray]) -> list[BlockRef | Exception]:
        """Writes whole block files, each visible atomically; each one's ref or its failure."""
        blobs = {p: bytes(b) for p, b in blobs.items()}  # what every fsspec filesystem takes
        try:
            self.fs.pipe(blobs)
        except FileNotFoundError:  # a filesystem that wants parents made first
            for parent in {p.rsplit("/", 1)[0] for p in blobs}:
                self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe(blobs)
        return [BlockRef(p, len(b)) for p, b in blobs.items()]

    def remove_many(self, paths: Sequence[str]) -> None:
        try:
            self.fs.rm(list(paths))
        except Exception:  # noqa: BLE001 - some were already gone (another engine evicted them)
            for path in paths:
                try:
                    self.fs.rm_file(path)
                except FileNotFoundError:
                    pass


class LocalBackend(Backend):
    """The local filesystem without fsspec's per-call overhead; writes are tmp + atomic rename."""

    def stat_many(self, paths: Sequence[str]) -> list[BlockRef | Exception]:
        out: list[BlockRef | Exception] = []
        for path in paths:
            try:
                out.append(BlockRef(path, os.stat(path).st_size))
            except OSError as exc:
                out.append(exc)
        return out

    def read_many(self, refs: Sequence[BlockRef]) -> list[bytes | Exception]:
        out: list[bytes | Exception] = []
        for ref in refs:
            try:
                with open(ref.path, "rb") as f:
                    if ref.offset:
                        f.seek(ref.offset)
                    out.append(_whole(ref, f.read(ref.size)))
            except OSError as exc:
                out.append(exc)
        return out

    def read_many_into(self, refs: Sequence[BlockRef], views: Sequence[memoryview]) -> list[Exception | None]:
        out: list[Exception | None] = []
        for ref, view in zip(refs, views):
            try:
                fd = os.open(ref.path, os.O_RDONLY)
                try:
                    n = os.preadv(fd, [view], ref.offset)
                finally:
                    os.close(fd)
                out.append(None if n == ref.size else EOFError(f"{ref.path}: {n} bytes at {ref.offset}, "
                                                               f"expected {ref.size}"))
            except OSError as exc:
                out.append(exc)
        return out

    def write_many(self, blobs: dict[str, bytes | bytearray]) -> list[BlockRef | Exception]:
        out: list[BlockRef | Exception] = []
        for path, blob in blobs.items():
            try:
                os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as f:
                    f.write(blob)
                os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
                out.append(BlockRef(path, len(blob)))
            except OSError as exc:
                out.append(exc)
        return out


class ChainfsBackend(Backend):
    """chainfs through its client: one metadata round trip per lookup, one per store's open and close."""

    @property
    def client(self) -> Any:  # ChainClient (shared per process, rebuilt after fork)
        return self.fs.client

    def stat_many(self, paths: Sequence[str]) -> list[BlockRef | Exception]:
        return [r if isinstance(r, Exception) else BlockRef(p, int(r.length), r)
                for p, r in zip(paths, self.client.stat_many(paths))]

    def read_many(self, refs: Sequence[BlockRef]) -> list[bytes | memoryview | Exception]:
        holes: set[int] = set()
        # Fresh buffers the caller owns (no copy into bytes: decode may keep them as the arrays).
        data = batch_buffers([r.size for r in refs])
        self.client.read_ranges_into([(r.handle, r.offset, r.offset + r.size, d) for r, d in zip(refs, data)],
                                     holes)
        # A whole block never has sparse chunks: a hole means its file was removed and collected.
        return [FileNotFoundError(2, "block file was removed", r.path) if k in holes
                else EOFError(f"{r.path} holds {r.handle.length} bytes, not {r.offset + r.size}")
                if r.offset + r.size > r.handle.length else d
                for k, (r, d) in enumerate(zip(refs, data))]

    def read_many_into(self, refs: Sequence[BlockRef], views: Sequence[memoryview]) -> list[Exception | None]:
        holes: set[int] = set()
        self.client.read_ranges_into([(r.handle, r.offset, r.offset + r.size, v) for r, v in zip(refs, views)], holes)
        return [FileNotFoundError(2, "block file was removed", r.path) if k in holes
                else EOFError(f"{r.path} holds {r.handle.length} bytes, not {r.offset + r.size}")
                if r.offset + r.size > r.handle.length else None for k, r in enumerate(refs)]

    def write_many(self, blobs: dict[str, bytes | bytearray]) -> list[BlockRef | Exception]:
        return [r if isinstance(r, Exception) else BlockRef(p, int(r.length), r)
                for p, r in zip(blobs, self.client.write_files(blobs))]


def _whole(ref: BlockRef, data: Any) -> Any:
    """`data` if it is the ref's whole range; a short read (a file cut or replaced) is an error."""
    if isinstance(data, BaseException) or len(data) == ref.size:
        return data
    return EOFError(f"{ref.path}: {len(data)} bytes at {ref.offset}, expected {ref.size}")


def backend_for(fs: fsspec.AbstractFileSystem) -> Backend:
    if isinstance(fs, LocalFileSystem):
        return LocalBackend(fs)
    try:
        from chainfs.client.fsspec.fs import ChainFileSystem
    except ImportError:  # pragma: no cover - the client is part of the same package
        return Backend(fs)
    return ChainfsBackend(fs) if isinstance(fs, ChainFileSystem) else Backend(fs)
