"""Reads and listings of committed chunks (docs/architecture.md, "Reading").

Any SERVING replica answers from committed data only; a non-tail replica holding a pending version
answers PENDING instead, so uncommitted bytes never leave a node. The same item checks serve the
three ways bytes leave a node: gRPC streams, the lean TCP data path, and short-circuit opens that
hand a local client the committed file itself.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Mapping

from chainfs.common import config
from chainfs.common.checksum import blocks_match, covering_blocks, crc32c
from chainfs.common.errors import ChainfsError, Reason, is_retryable
from chainfs.common.streams import pieces
from chainfs.proto import storage_pb2
from chainfs.storageserver.chunk_ids import ChunkKey, key_of
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.metrics import record_io
from chainfs.storageserver.routing import SERVING, ChainPosition, RoutingView, fresh_position

log = logging.getLogger(__name__)


@dataclass
class CommittedRange:
    """An open committed chunk file and the range of it an item asked for."""

    key: ChunkKey
    meta: storage_pb2.ChunkMeta
    file: BinaryIO
    start: int
    length: int
    target_id: int = 0
    opened: float = 0.0  # monotonic time the read was resolved, for the I/O metrics
    chain_id: int = 0

    def served(self) -> None:
        """Counts the range as read from its target (once its bytes are out, or handed over)."""
        record_io(self.target_id, "read", self.length, time.monotonic() - self.opened)

    @property
    def whole_chunk(self) -> bool:
        return self.start == 0 and self.length == self.meta.length

    def read_into(self, view: memoryview) -> None:
        """Fills `view` (exactly `length` bytes) from the file; a short file is an I/O error."""
        got = 0
        while got < len(view):
            n = os.preadv(self.file.fileno(), [view[got:]], self.start + got)
            if n == 0:
                break
            got += n
        if got != len(view):
            log.error("chunk %s: file shorter than its metadata (%d bytes)", self.key, self.meta.length)
            raise ChainfsError(Reason.IO_ERROR, f"chunk {self.key} is truncated on disk")

    def close(self) -> None:
        self.file.close()


Resolved = tuple[storage_pb2.ReadItemHeader, CommittedRange | None]


class ChunkReader:
    """Decides, item by item, what a replica may serve, and opens exactly that committed version."""

    def __init__(self, routing: RoutingView, stores: Mapping[int, ChunkStore],
                 message_bytes: int = config.STREAM_MESSAGE_BYTES,
                 on_corrupt: Callable[[int, int, ChunkKey], None] | None = None) -> None:
        self.routing = routing
        self.stores = stores
        self.message_bytes = message_bytes
        self.on_corrupt = on_corrupt  # (chain id, target id, chunk): a bad copy found while serving

    def _report(self, chain_id: int, target_id: int, key: ChunkKey) -> None:
        if self.on_corrupt is not None:
            self.on_corrupt(chain_id, target_id, key)

    def resolve(self, request: storage_pb2.ReadRequest) -> Iterator[Resolved]:
        """Per item: its header (status, meta, length) and, when OK, the open range to send.

        The routing table is pulled at most once per request, when an item names a chain version
        newer than ours. Callers close every range they get.
        """
        refreshed = False
        positions: dict[int, ChainPosition | None] = {}  # per chain, once per request (a batch
        for i, item in enumerate(request.items):         # names few chains, many chunks)
            if item.chain_id in positions:
                pos = positions[item.chain_id]
            else:
                pos = positions[item.chain_id] = self.routing.position(item.chain_id)
            if not refreshed and (pos is None or pos.chain_version < item.chain_version):
                refreshed = True
                pos = fresh_position(self.routing, item.chain_id, item.chain_version)
                positions.clear()
                positions[item.chain_id] = pos
            yield self._resolve_item(i, item, pos)

    def _resolve_item(self, i: int, item: storage_pb2.ReadItem, pos: ChainPosition | None) -> Resolved:
        def status(code: int, message: str, meta: storage_pb2.ChunkMeta | None = None) -> Resolved:
            return storage_pb2.ReadItemHeader(item=i, status=code, meta=meta, message=message), None

        try:
            key = key_of(item.chunk)
        except ChainfsError as exc:
            return status(storage_pb2.INVALID, exc.message)
        if item.offset + item.length > config.MAX_CHUNK_SIZE:
            return status(storage_pb2.INVALID, f"range [{item.offset}, +{item.length}) is beyond any chunk")
        if pos is None or pos.chain_version != item.chain_version:
            have = "none" if pos is None else pos.chain_version
            return status(storage_pb2.STALE_ROUTING,
                          f"chain {item.chain_id}: local version {have}, request {item.chain_version}")
        if pos.state != SERVING:
            return status(storage_pb2.NOT_SERVING, f"target {pos.target_id} is not serving")
        store = self.stores.get(pos.target_id)
        if store is None:
            return status(storage_pb2.STALE_ROUTING, f"target {pos.target_id} is not on this node")
        try:
            meta = store.get_meta(key)
            # Pending first: a chunk's very first update is in flight with no committed version yet,
            # and the tail may already serve it, so "not found" here would be a stale answer.
            if meta is not None and meta.pending_version and not pos.is_tail:
                return status(storage_pb2.PENDING, f"chunk {key} has an update in flight", meta)
            opened = store.open_committed(key) if meta is not None and meta.version else None
            if opened is None:
                return status(storage_pb2.CHUNK_NOT_FOUND, f"chunk {key} not found")
        except ChainfsError as exc:
            # A retryable failure (a version swap under way) is answered as in-flight, so the
            # client tries again; anything else is an I/O error.
            code = storage_pb2.PENDING if is_retryable(exc.reason) else storage_pb2.IO_ERROR
            if code == storage_pb2.IO_ERROR:
                self._report(pos.chain_id, pos.target_id, key)
            return status(code, exc.message)
        except OSError as exc:
            log.error("chunk %s: open failed: %s", key, exc)
            return status(storage_pb2.IO_ERROR, f"read of chunk {key} failed: {exc}")
        meta, f = opened
        start = min(item.offset, meta.length)
        end = min(item.offset + item.length, meta.length)
        header = storage_pb2.ReadItemHeader(item=i, status=storage_pb2.OK, meta=meta, length=end - start)
        return header, CommittedRange(key, meta, f, start, end - start, pos.target_id, time.monotonic(),
                                      pos.chain_id)

    def load(self, header: storage_pb2.ReadItemHeader, source: CommittedRange, buffer: bytearray | None = None
             ) -> memoryview | None:
        """Reads an OK item's bytes, verified, and sets their CRC; None (and the header's status
        changed) when this replica's copy is bad. Only the blocks covering the range are read and
        checked against their stored CRCs (the whole chunk, for chunks stored without them)."""
        meta = source.meta
        if meta.block_crcs:
            lo, hi = covering_blocks(source.start, source.length, meta.length)
        else:
            lo, hi = 0, meta.length
        buf = buffer if buffer is not None and len(buffer) >= hi - lo else bytearray(hi - lo)
        view = memoryview(buf)[:hi - lo]
        try:
            CommittedRange(source.key, meta, source.file, lo, hi - lo, source.target_id).read_into(view)
        except ChainfsError as exc:
            header.status, header.message, header.length = storage_pb2.IO_ERROR, exc.message, 0
            self._report(source.chain_id, source.target_id, source.key)
            return None
        except OSError as exc:
            log.error("chunk %s: read failed: %s", source.key, exc)
            header.status, header.message, header.length = storage_pb2.IO_ERROR, f"read failed: {exc}", 0
            self._report(source.chain_id, source.target_id, source.key)
            return None
        good = blocks_match(view, lo, meta.block_crcs) if meta.block_crcs else crc32c(view) == meta.crc
        if not good:
            log.error("chunk %s version %d: data does not match its CRC32C (disk corruption?)",
                      source.key, meta.version)
            header.status, header.length = storage_pb2.CHECKSUM_MISMATCH, 0
            header.message = f"chunk {source.key} is corrupt on this replica"
            self._report(source.chain_id, source.target_id, source.key)
            return None
        data = view[source.start - lo:source.start - lo + source.length]
        header.data_crc = crc32c(data)
        return data

    def read(self, request: storage_pb2.ReadRequest) -> Iterator[storage_pb2.ReadReply]:
        """The gRPC form: per item a header message, then its bytes in stream messages."""
        for header, source in self.resolve(request):
            data = None
            if source is not None:
                try:
                    data = self.load(header, source)
                finally:
                    source.close()
            yield storage_pb2.ReadReply(header=header)
            if data is not None:
                for piece in pieces(data, self.message_bytes):
                    yield storage_pb2.ReadReply(data=piece)
                source.served()

    def list_chunks(self, request: storage_pb2.ChunkListRequest) -> storage_pb2.ChunkListReply:
        pos = fresh_position(self.routing, request.chain_id)
        if pos is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"no target of chain {request.chain_id} on this node")
        store = self.stores.get(pos.target_id)
        if store is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"target {pos.target_id} is not on this node")
        start_after = None
        if request.HasField("start_after") and request.start_after.inode:
            start_after = key_of(request.start_after)
        chunks, more = store.list_chunks(request.inode, start_after, request.limit)
        return storage_pb2.ChunkListReply(chunks=chunks, more=more)
