"""Writing a file through a write session: bytes are cut into chunks and written in parallel.

The session's inode becomes visible only at `close()` (REPLACE/CREATE_NEW), so readers see the old
file or the new one whole. A writer that fails abandons its session; its chunks are collected.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future

from chainfs.common import config
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.rpc.meta_client import MetaClient
from chainfs.client.rpc.placement import chain_of
from chainfs.client.rpc.pools import EXECUTOR
from chainfs.client.rpc.storage_client import StorageClient

log = logging.getLogger(__name__)


class ChunkWriter:
    """Accepts bytes in order and keeps up to `max_in_flight` chunk writes running."""

    def __init__(self, meta: MetaClient, storage: StorageClient, session: mpb.WriteSession,
                 max_in_flight: int | None = None) -> None:
        self.meta = meta
        self.storage = storage
        self.session = session
        self.inode = session.inode
        self.layout = session.inode.layout
        self.chunk_size = self.layout.chunk_size
        self.position = session.inode.length
        self._buffer: bytearray | None = None  # the chunk being filled (chunk_size bytes)
        self._filled = 0                         # bytes of it in use
        self._free: list[bytearray] = []         # filled buffers whose writes are done, for reuse
        self._buffer_start = self.position  # file offset of _buffer[0]
        self._in_flight: deque[tuple[Future, bytearray | None]] = deque()
        self._max_in_flight = max_in_flight or max(2, 2 * len(self.layout.chains))
        self.closed = False
        # A write that outlives its session's lease would be collected at close: renew well before.
        self.renew_every = config.WRITE_SESSION_LEASE / 3

    @property
    def renew_every(self) -> float:
        return self._renew_every

    @renew_every.setter
    def renew_every(self, seconds: float) -> None:
        self._renew_every = seconds
        self._renew_at = time.monotonic() + seconds

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Takes bytes in order. Whole chunks of an immutable `bytes` go out as slices of it (no
        copy); anything else passes through one chunk-sized buffer, reused across chunks."""
        if self.closed:
            raise ValueError("write to a closed file")
        view = memoryview(data).cast("B")
        n = len(view)
        while len(view):
            chunk_room = self.chunk_size - self._buffer_start % self.chunk_size
            if not self._filled and len(view) >= chunk_room and isinstance(data, bytes):
                self._submit(view[:chunk_room], None)
                view = view[chunk_room:]
                continue
            take = min(chunk_room - self._filled, len(view))
            buf = self._buffer_for_fill()
            buf[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == chunk_room:
                self._submit_buffer()
        self.position += n
        if time.monotonic() >= self._renew_at:
            self.meta.renew_session(self.session.session_id, self.session.path)
            self._renew_at = time.monotonic() + self.renew_every
        return n

    def _buffer_for_fill(self) -> bytearray:
        if self._buffer is None:
            self._buffer = self._free.pop() if self._free else bytearray(self.chunk_size)
        return self._buffer

    def _submit_buffer(self) -> None:
        buf, filled = self._buffer, self._filled
        assert buf is not None
        self._buffer, self._filled = None, 0
        self._submit(memoryview(buf)[:filled], buf)

    def _submit(self, data: memoryview, owned: bytearray | None) -> None:
        """Starts one chunk write; `owned` is a buffer of ours to reuse once the write is done."""
        index, inner = divmod(self._buffer_start, self.chunk_size)
        chain_id = chain_of(self.layout, index)
        replace = inner == 0
        fut = EXECUTOR.get().submit(self.storage.write_chunk, chain_id, self.inode.id, index, data,
                                    self.chunk_size, inner, replace)
        self._in_flight.append((fut, owned))
        self._buffer_start += len(data)
        while len(self._in_flight) >= self._max_in_flight:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        fut, owned = self._in_flight.popleft()
        fut.result()
        if owned is not None and len(self._free) < 2:
            self._free.append(owned)

    def _drain(self) -> None:
        while self._in_flight:
            self._finish_oldest()

    def close(self) -> mpb.Inode:
        """Writes what is buffered, waits for every chunk, then commits the session."""
        if self.closed:
            raise ValueError("file already closed")
        try:
            if self._filled:
                self._submit_buffer()
            self._drain()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.meta.close_write(self.session.session_id, self.position, commit=True,
                                     path=self.session.path)

    def abort(self) -> None:
        """Abandons the session: nothing becomes visible; the chunks go to garbage collection."""
        if self.closed:
            return
        self.closed = True
        for fut, _ in self._in_flight:
            fut.cancel()
        for fut, _ in self._in_flight:
            if not fut.cancelled():
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - already failing; the session is dropped
                    pass
        self._in_flight.clear()
        try:
            self.meta.close_write(self.session.session_id, self.position, commit=False,
                                  path=self.session.path)
        except OSError as exc:
            log.warning("could not abandon write session %s: %s", self.session.session_id, exc)

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()
