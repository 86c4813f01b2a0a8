"""ChainfsFile: the fsspec file object, and a read-ahead cache that fetches whole windows in parallel.

Writes go through a write session opened when the file is opened (so `xb` fails at open): with
`wb`/`xb` the new inode stays unlinked until `commit()`, so readers see the old file or the new one
whole; inside `fs.transaction` commit waits for the transaction's end and `discard()` abandons the
session. A file that is dropped or left by an exception without being closed is discarded, never
half-committed. Reads read the inode that was stat'ed at open, even if the path is replaced later.
"""

from __future__ import annotations

import errno

import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from fsspec.caching import BaseCache
from fsspec.spec import AbstractBufferedFile

from chainfs.common.config import MiB
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.fsspec.info import to_inode
from chainfs.client.rpc.pools import LazyPool
from chainfs.client.files.writer import ChunkWriter

if TYPE_CHECKING:
    from chainfs.client.fsspec.fs import ChainFileSystem

log = logging.getLogger(__name__)

MAX_WINDOW = 64 * MiB
OPEN_MODES = {"wb": mpb.REPLACE, "xb": mpb.CREATE_NEW, "ab": mpb.APPEND}  # fsspec open mode -> session mode

# Prefetches run here, not in the chunk-I/O pool: a prefetch waits on chunk reads submitted to that
# pool, and must never hold one of its workers while doing so.
PREFETCH = LazyPool("prefetch")


class ReadAheadCache(BaseCache):
    """Keeps one window of the file and, on sequential reads, fetches the next one in background.

    A window spans several chunks (by default one per chain of the file's stripe), and a window
    fetch is one batched read, so its chunks come from different storage nodes in parallel.
    """

    name = "chainfs-readahead"

    def __init__(self, blocksize: int, fetcher: Callable[[int, int], bytes], size: int) -> None:
        super().__init__(blocksize, fetcher, size)
        self._lock = threading.Lock()
        self._start = 0
        self._data = b""
        self._next: tuple[int, Future] | None = None
        self._last_end = -1

    def _take_prefetch(self, pos: int) -> bool:
        if self._next is None:
            return False
        start, fut = self._next
        self._next = None
        data = fut.result()
        if start <= pos < start + len(data):
            self._start, self._data = start, data
            return True
        return False

    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else start
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        with self._lock:
            sequential = start == self._last_end
            parts: list[bytes] = []
            pos = start
            while pos < stop:
                end_of_window = self._start + len(self._data)
                if self._start <= pos < end_of_window:
                    take = min(stop, end_of_window) - pos
                    parts.append(self._data[pos - self._start:pos - self._start + take])
                    pos += take
                    self.hit_count += 1
                    continue
                if self._take_prefetch(pos):
                    continue
                fetch_end = min(self.size, max(stop, pos + self.blocksize))
                self.miss_count += 1
                self.total_requested_bytes += fetch_end - pos
                self._start, self._data = pos, self.fetcher(pos, fetch_end)
            self._last_end = stop
            window_end = self._start + len(self._data)
            if (sequential or start == 0) and self._next is None and window_end < self.size:
                nxt = min(self.size, window_end + self.blocksize)
                self._next = (window_end, PREFETCH.get().submit(self.fetcher, window_end, nxt))
            return b"".join(parts) if len(parts) != 1 else parts[0]

    def close(self) -> None:
        with self._lock:
            if self._next is not None:
                self._next[1].cancel()
                self._next = None
            self._data = b""


class ChainfsFile(AbstractBufferedFile):
    """A chainfs file opened through fsspec (modes rb, wb, ab, xb)."""

    fs: "ChainFileSystem"

    def __init__(self, fs: "ChainFileSystem", path: str, mode: str = "rb", block_size: int | str | None = None,
                 autocommit: bool = True, cache_type: str = "chainfs-readahead",
                 cache_options: dict | None = None, **kwargs: Any) -> None:
        self._writer: ChunkWriter | None = None
        self._committed = False
        if mode not in ("rb", *OPEN_MODES):
            raise NotImplementedError(f"mode {mode!r} is not supported (use rb, wb, ab or xb)")
        if mode == "rb":
            info = kwargs.pop("details", None) or fs.info(path)
            if info["type"] == "directory":
                raise IsADirectoryError(21, "is a directory", path)
            kwargs["details"] = info
            if block_size in (None, "default"):
                stripe = max(1, len(info["chains"])) * max(1, info["chunk_size"])
                block_size = min(MAX_WINDOW, max(fs.blocksize, stripe))
        super().__init__(fs, path, mode=mode, block_size=block_size, autocommit=autocommit,
                         cache_type="none", cache_options=None, **kwargs)
        if mode == "rb":
            if cache_type in ("chainfs-readahead", "readahead", "default", None):
                self.cache = ReadAheadCache(self.blocksize, self._fetch_range, self.size)
            else:
                from fsspec.caching import caches
                self.cache = caches[cache_type](self.blocksize, self._fetch_range, self.size,
                                                **(cache_options or {}))
            self._inode = to_inode(self.details)
        else:
            # Open the session now: `xb` must fail at open, and the path is claimed from here on.
            try:
                self._writer = fs.client.open_writer(path, OPEN_MODES[mode], parents=True)
            except BaseException:
                self.closed = True  # nothing to flush or commit
                raise
            self._writer.renew_every = fs.lease_renew_s  # long writes keep their session alive
            if mode == "ab":
                self.loc = self._writer.position

    # ---- reading ----

    def _fetch_range(self, start: int, end: int) -> bytes:
        holes: set[int] = set()
        data = self.fs.client.read_ranges([(self._inode, start, end)], holes)[0]
        if holes:
            self._check_inode_still_linked()
        return data

    def readinto(self, b: Any) -> int:
        """Large reads land straight in the caller's buffer (no read-ahead copy); small ones use
        the read-ahead window."""
        view = memoryview(b).cast("B")
        if self.mode != "rb" or len(view) < self.blocksize:
            return super().readinto(b)
        end = min(self.size, self.loc + len(view))
        if end <= self.loc:
            return 0
        holes: set[int] = set()
        self.fs.client.read_ranges_into([(self._inode, self.loc, end, view[:end - self.loc])], holes)
        if holes:
            self._check_inode_still_linked()
        n = end - self.loc
        self.loc = end
        return n

    def _check_inode_still_linked(self) -> None:
        """A missing chunk is a sparse range, unless the file was removed or replaced after we
        opened it and its chunks were collected: then zeros would be wrong bytes, so fail."""
        try:
            current = self.fs.client.stat(self.path).id
        except FileNotFoundError:
            current = None
        if current != self._inode.id:
            raise FileNotFoundError(errno.ENOENT, "file was removed or replaced while open for reading "
                                    "and its chunks were collected", self.path)

    # ---- writing ----

    def _initiate_upload(self) -> None:
        """The session was opened at open(); nothing to do."""

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._writer is not None
        with self.buffer.getbuffer() as view:
            self._writer.write(view)
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Makes the whole file visible at once (the write session's commit)."""
        if self._writer is None or self._committed:
            return
        self._committed = True
        self._writer.close()
        self.fs.invalidate_cache(self.path)

    def discard(self) -> None:
        """Abandons the write: nothing becomes visible, the chunks go to garbage collection."""
        if self._writer is None or self._committed:
            return
        self._committed = True
        self._writer.abort()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.mode != "rb" and not self.closed:
            self.discard()
            self.closed = True
            return
        self.close()

    def __del__(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None and not self._committed and not self.closed:
            log.warning("%s: write dropped without close(); discarding it", getattr(self, "path", "?"))
            try:
                self.discard()
            finally:
                self.closed = True
            return
        super().__del__()
