"""CRAQ writes along a chain (docs/architecture.md, "Writing: write sessions and CRAQ").

Every hop checks the chain version and its sender, then under the chunk's lock marks the update as
pending version v+1 (so reads here answer PENDING from that moment), and forwards it. A replacing
write (every forwarded one, and a client's whole-chunk write) is forwarded *cut-through*: the
header goes to the successor before the data has arrived, then each piece as it arrives. A node
stages the content only once all of it is here and its CRC32C matches; the tail commits a fully
staged, verified chunk at once and each node commits as the acknowledgement passes back. A patch
(a write into part of a chunk) is built at the head from the committed content and forwarded whole.

A forward that fails (successor down, stale routing) or hangs while the chain version moves (the
successor was declared dead, e.g. SIGSTOPped) is sent again, whole, to whatever successor the
newest routing names (or committed here when we became the tail), until the hop's deadline; only
then is the write failed with a retryable status. Not aborting early matters: a successor may
already have committed the update, and discarding it here would leave replicas that disagree.
Request ids make every retry apply once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Iterator, Mapping, Protocol

import grpc

from chainfs.common import config, wire
from chainfs.common.checksum import crc32c
from chainfs.common.dataconn import DataConnections
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.rpc import ChannelPool
from chainfs.proto import storage_pb2
from chainfs.storageserver.chunk_ids import MAX_INDEX, ChunkKey, chunk_key, key_of, validate_write
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.forwarding import CutThrough, Rerouted, Successor
from chainfs.storageserver.locks import KeyedLocks
from chainfs.storageserver.metrics import record_io
from chainfs.storageserver.repair import check_copy
from chainfs.storageserver.routing import SERVING, SYNCING, ChainPosition, RoutingView, fresh_position

if TYPE_CHECKING:
    from chainfs.storageserver.repair import ChunkRepairer

log = logging.getLogger(__name__)


class WriteBody(Protocol):
    """The data of one write as it arrives (a gRPC stream or a TCP frame's payload)."""

    def read_into(self, view: memoryview) -> None:
        """Fills `view` completely, or raises (INVALID_ARGUMENT when the sender sent too little)."""

    def finish(self) -> None:
        """Checks that nothing follows the announced length."""

    def discard(self) -> None:
        """Reads and drops whatever of the data has not been read yet."""


def _copy_meta(meta: storage_pb2.ChunkMeta) -> storage_pb2.ChunkMeta:
    out = storage_pb2.ChunkMeta()
    out.CopyFrom(meta)
    return out


class Replicator:
    """The storage service's write logic, independent of the transport that brought the request."""

    def __init__(self, routing: RoutingView, stores: Mapping[int, ChunkStore],
                 channels: ChannelPool | None = None, *,
                 rpc_timeout: float = config.STORAGE_RPC_TIMEOUT,
                 message_bytes: int = config.STREAM_MESSAGE_BYTES,
                 max_client_updates: int = 0, locks: KeyedLocks | None = None,
                 connections: DataConnections | None = None) -> None:
        self.routing = routing
        self.stores = stores  # target id -> store; may be filled after registration
        self.channels = channels or ChannelPool()
        self.rpc_timeout = rpc_timeout
        self.message_bytes = message_bytes
        self.locks = locks or KeyedLocks()
        self.successor = Successor(self.channels, connections or DataConnections(), message_bytes)
        self.repairer: "ChunkRepairer | None" = None  # set by the node: appends onto a rotten chunk repair it
        # Client updates wait on successors while holding a worker; forwarded ones must always
        # find one, or nodes that head each other's chains could deadlock. So updates that start
        # here are capped (0 = no cap) and refused with BUSY (retryable) beyond the cap.
        self._admission = threading.BoundedSemaphore(max_client_updates) if max_client_updates > 0 else None

    @contextlib.contextmanager
    def _admit(self, from_target: int) -> Iterator[None]:
        if from_target or self._admission is None:
            yield
            return
        if not self._admission.acquire(timeout=0.05):
            raise ChainfsError(Reason.BUSY, "too many updates in flight on this node; retry")
        try:
            yield
        finally:
            self._admission.release()

    # ---- common checks ----

    def _position(self, chain_id: int, chain_version: int) -> ChainPosition:
        """This node's position in the chain at exactly `chain_version`, else STALE_ROUTING."""
        pos = fresh_position(self.routing, chain_id, chain_version)
        if pos is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"no target of chain {chain_id} on this node")
        if pos.chain_version != chain_version:
            raise ChainfsError(
                Reason.STALE_ROUTING,
                f"chain {chain_id} is at version {pos.chain_version}, request has {chain_version}",
            )
        return pos

    def _check_sender(self, pos: ChainPosition, from_target: int) -> None:
        if from_target == 0:
            if not pos.is_head:
                raise ChainfsError(Reason.STALE_ROUTING,
                                   f"target {pos.target_id} is not the head of chain {pos.chain_id}")
        else:
            if pos.state not in (SERVING, SYNCING):
                raise ChainfsError(Reason.STALE_ROUTING,
                                   f"target {pos.target_id} of chain {pos.chain_id} takes no writes")
            if pos.predecessor != from_target:
                raise ChainfsError(
                    Reason.STALE_ROUTING,
                    f"target {from_target} is not the predecessor of target {pos.target_id} "
                    f"in chain {pos.chain_id} (expected {pos.predecessor})",
                )

    def _store(self, pos: ChainPosition) -> ChunkStore:
        store = self.stores.get(pos.target_id)
        if store is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"target {pos.target_id} is not on this node")
        return store

    def _recheck(self, pos: ChainPosition) -> ChainPosition:
        """Routing may move while a writer waits for the chunk lock: check it once more."""
        now = self.routing.position(pos.chain_id)
        if now is None or now.chain_version != pos.chain_version or now.target_id != pos.target_id:
            raise ChainfsError(Reason.STALE_ROUTING, f"chain {pos.chain_id} changed during the request")
        if now.state not in (SERVING, SYNCING):  # fenced (e.g. resumed after SIGSTOP) or taken out
            raise ChainfsError(Reason.STALE_ROUTING, f"target {pos.target_id} takes no writes now")
        return now

    def _still_current(self, pos: ChainPosition) -> bool:
        now = self.routing.position(pos.chain_id)
        return now is not None and now.chain_version == pos.chain_version

    def _deadline(self, time_remaining: float | None) -> float:
        """This hop's deadline (monotonic): the caller's, a little early so our reply makes it back."""
        budget = self.rpc_timeout if time_remaining is None else min(self.rpc_timeout, time_remaining - 0.05)
        return time.monotonic() + max(0.05, budget)

    @staticmethod
    def _left(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChainfsError(Reason.TIMEOUT, "deadline exceeded")
        return left

    # ---- writes ----

    def write(self, h: storage_pb2.WriteHeader, body: WriteBody, time_remaining: float | None = None,
              buffer: bytearray | None = None) -> storage_pb2.WriteReply:
        """Applies one chunk update whose data arrives through `body` (read to its end, or the
        caller must drop the connection). A replacing write is received straight into its staged
        file; a patch into `buffer`, when given and large enough (a transport reuses one per
        connection: no fresh pages to fault in for every chunk)."""
        deadline = self._deadline(time_remaining)
        started = time.monotonic()
        key = key_of(h.chunk)
        validate_write(h.chunk_size, h.offset, h.length, h.replace)
        forwarded = h.from_target != 0
        if forwarded and (not h.replace or h.version == 0):
            raise ChainfsError(Reason.INVALID_ARGUMENT, "a forwarded write carries a versioned full chunk")
        pos = self._position(h.chain_id, h.chain_version)
        self._check_sender(pos, h.from_target)
        store = self._store(pos)
        if not h.replace:
            data = memoryview(buffer)[:h.length] if buffer is not None and len(buffer) >= h.length \
                else memoryview(bytearray(h.length))
            self._receive(body, data, None)
            with self._admit(0), self.locks.hold((pos.target_id, key), timeout=self._left(deadline)):
                reply = self._apply_patch(self._recheck(pos), store, key, h, data, deadline)
        else:
            with self._admit(h.from_target), self.locks.hold((pos.target_id, key), timeout=self._left(deadline)):
                pos = self._recheck(pos)
                record = store.get_record(key)
                reply = self._duplicate(record, h)
                if reply is not None:
                    body.discard()
                    return reply
                version = h.version if forwarded else (record.meta.version if record is not None else 0) + 1
                reply = self._apply_replace(pos, store, key, h, version, body, deadline)
        record_io(pos.target_id, "write", h.length, time.monotonic() - started)
        return reply

    @staticmethod
    def _duplicate(record: storage_pb2.StoredChunk | None,
                   h: storage_pb2.WriteHeader) -> storage_pb2.WriteReply | None:
        """The answer to a retry of an update this replica (and every one after it) committed."""
        if record is None or not h.request_id or h.request_id not in record.recent_requests:
            return None
        if h.from_target == 0:
            log.debug("duplicate write %s of %s", h.request_id, h.chunk)
            meta = _copy_meta(record.meta)
            meta.pending_version = 0
            return storage_pb2.WriteReply(meta=meta, duplicate=True)
        m = record.meta
        if m.version == h.version and m.crc == h.data_crc and m.length == h.length and not m.pending_version:
            return storage_pb2.WriteReply(meta=_copy_meta(m), duplicate=True)
        return None

    def _receive(self, body: WriteBody, view: memoryview, stream: CutThrough | None) -> None:
        """Takes in the data piece by piece, handing each piece to the cut-through forward."""
        for at in range(0, len(view), wire.SEND_PIECE):
            piece = view[at:at + wire.SEND_PIECE]
            body.read_into(piece)
            if stream is not None:
                stream.send(piece)
        body.finish()

    def _apply_replace(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey, h: storage_pb2.WriteHeader,
                       version: int, body: WriteBody, deadline: float) -> storage_pb2.WriteReply:
        # Pending before anything leaves this node: once a successor may commit, reads here must
        # answer PENDING rather than the old version (a reader could otherwise see new, then old).
        store.mark_pending(key, version)
        stream = staging = None
        try:
            staging = store.open_staging(key, version, h.length)
            if pos.successor:
                stream = self.successor.open_stream(pos, self._forward_header(pos, h, version, h.length, h.data_crc),
                                                    deadline, lambda: self._still_current(pos))
            self._receive(body, staging.view, stream)
            if crc32c(staging.view) != h.data_crc:
                raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"data of chunk {key} does not match its CRC32C")
            store.finish_staging(staging)
        except BaseException:
            # Nothing complete left this node, so no successor can commit it: discard.
            if stream is not None:
                stream.abort()
            if staging is not None:
                staging.discard()
            self._discard_pending(store, key, version)
            raise
        try:
            return self._forward_and_commit(pos, store, key, h, version, staging.view, h.data_crc, deadline, stream)
        finally:
            staging.close()

    def _apply_patch(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey,
                     h: storage_pb2.WriteHeader, data: memoryview, deadline: float) -> storage_pb2.WriteReply:
        if crc32c(data) != h.data_crc:
            raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"data of chunk {key} does not match its CRC32C")
        record = store.get_record(key)
        duplicate = self._duplicate(record, h)
        if duplicate is not None:
            return duplicate
        content = self._patched(pos, store, key, h.offset, data)
        version = (record.meta.version if record is not None else 0) + 1
        store.mark_pending(key, version)
        try:
            store.stage(key, version, content)
        except BaseException:
            self._discard_pending(store, key, version)
            raise
        return self._forward_and_commit(pos, store, key, h, version, content, crc32c(content), deadline, None)

    def _patched(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey, offset: int,
                 data: memoryview) -> bytearray:
        """Committed content with `data` written at `offset` (zeros fill any gap). A rotten,
        truncated or missing committed copy is first repaired from another replica (we hold the
        chunk's lock); without one the patch fails."""
        _, old, problem = check_copy(store, key)
        if problem:
            log.error("chunk %s: committed copy is bad (%s)", key, problem)
            if self.repairer is not None:
                self.repairer.repair_held(pos.chain_id, pos.target_id, key, "append")  # raises if it cannot
                _, old, problem = check_copy(store, key)
            if problem:
                raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"committed data of chunk {key} is corrupt")
        end = offset + len(data)
        content = bytearray(max(len(old), end))
        content[: len(old)] = old
        content[offset:end] = data
        return content

    @staticmethod
    def _discard_pending(store: ChunkStore, key: ChunkKey, version: int) -> None:
        try:
            store.abort_pending(key)
        except Exception:  # noqa: BLE001 - keep the original failure
            log.exception("chunk %s: could not discard pending version %d", key, version)

    def _forward_and_commit(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey,
                            h: storage_pb2.WriteHeader, version: int, content: bytearray | memoryview, crc: int,
                            deadline: float, stream: CutThrough | None) -> storage_pb2.WriteReply:
        forwarding = bool(pos.successor)
        try:
            pos, acked = self._forward_until_acked(pos, h, version, content, crc, deadline, stream)
            if not acked:
                # We are the tail: make sure we were not fenced meanwhile (a stale commit must not
                # slip in after a SIGCONT). Once a successor has acknowledged, never back out: it
                # has committed, and so must we, or replicas would disagree.
                pos = self._recheck(pos)
            meta = store.commit(key, version, len(content), crc, pos.chain_version, h.request_id)
        except BaseException:
            if forwarding:
                # The update may have reached (and been committed by) the successors even though no
                # acknowledgement came back. Backing out would let this replica serve the old
                # version beside successors serving the new one; keeping it pending makes reads here
                # answer PENDING (the client reads the tail) until the client's retry, or the next
                # write, forwards a full version again and commits it everywhere.
                log.warning("chunk %s: forwarding version %d failed; it stays pending", key, version)
                raise
            self._discard_pending(store, key, version)
            raise
        return storage_pb2.WriteReply(meta=meta)

    @staticmethod
    def _forward_header(pos: ChainPosition, h: storage_pb2.WriteHeader, version: int, length: int,
                        crc: int) -> storage_pb2.WriteHeader:
        return storage_pb2.WriteHeader(
            chain_id=h.chain_id, chain_version=pos.chain_version, chunk=h.chunk, offset=0,
            length=length, replace=True, data_crc=crc, chunk_size=h.chunk_size,
            request_id=h.request_id, version=version, from_target=pos.target_id,
        )

    def _forward_until_acked(self, pos: ChainPosition, h: storage_pb2.WriteHeader, version: int,
                             content: bytearray | memoryview, crc: int, deadline: float,
                             stream: CutThrough | None) -> tuple[ChainPosition, bool]:
        """Finishes the cut-through forward, or forwards whole to the current successor, until one
        acknowledges; returns the position used and whether a successor acknowledged (False: we
        are, or became, the tail)."""
        while pos.successor:
            try:
                if stream is not None:
                    reply = stream.finish()
                else:
                    header = self._forward_header(pos, h, version, len(content), crc)
                    reply = self.successor.send_whole(pos, header, memoryview(content), deadline,
                                                      lambda: self._still_current(pos))
                self._check_ack(pos, reply.meta, version, len(content), crc)
                return pos, True
            except Rerouted:
                pass
            except ChainfsError as exc:
                if exc.reason not in (Reason.UNAVAILABLE, Reason.STALE_ROUTING):
                    raise
                if deadline - time.monotonic() <= 0.06:
                    raise  # out of time: the client retries (with refreshed routing)
                time.sleep(0.05)
                self.routing.refresh()
            stream = None
            self._left(deadline)
            now = self.routing.position(pos.chain_id)
            if now is None or now.target_id != pos.target_id or now.state not in (SERVING, SYNCING):
                raise ChainfsError(Reason.STALE_ROUTING,
                                   f"target {pos.target_id} left chain {pos.chain_id} during a write")
            if now.chain_version != pos.chain_version:
                log.info("chain %d: re-forwarding version %d of %s to target %d (chain v%d)",
                         pos.chain_id, version, h.chunk.index, now.successor, now.chain_version)
            pos = now
        return pos, False

    @staticmethod
    def _check_ack(pos: ChainPosition, m: storage_pb2.ChunkMeta, version: int, length: int, crc: int) -> None:
        if m.version != version or m.length != length or m.crc != crc:
            log.error("chain %d: successor %d acknowledged version %d/%d bytes/crc %08x, expected %d/%d/%08x",
                      pos.chain_id, pos.successor, m.version, m.length, m.crc, version, length, crc)
            raise ChainfsError(Reason.UNAVAILABLE, f"successor {pos.successor} acknowledged a different chunk")

    # ---- removal ----

    def remove_chunks(self, request: storage_pb2.RemoveChunksRequest,
                      time_remaining: float | None = None) -> storage_pb2.RemoveChunksReply:
        chunk_key(request.inode, 0)
        pos = self._position(request.chain_id, request.chain_version)
        self._check_sender(pos, request.from_target)
        store = self._store(pos)
        deadline = self._deadline(time_remaining)
        with self._admit(request.from_target):
            return self._remove_and_forward(pos, store, request, deadline)

    def _remove_and_forward(self, pos: ChainPosition, store: ChunkStore, request: storage_pb2.RemoveChunksRequest,
                            deadline: float) -> storage_pb2.RemoveChunksReply:
        removed = 0
        if request.from_index <= MAX_INDEX:
            for key in store.list_keys(request.inode, request.from_index):
                with self.locks.hold((pos.target_id, key), timeout=self._left(deadline)):
                    if store.remove(key):
                        removed += 1
        if pos.successor:
            forward = storage_pb2.RemoveChunksRequest()
            forward.CopyFrom(request)
            forward.from_target = pos.target_id
            try:
                self.successor.stub(pos).RemoveChunks(forward, timeout=self._left(deadline))
            except grpc.RpcError as err:
                raise self.successor.grpc_error(pos, err) from None
        if removed:
            log.debug("chain %d: removed %d chunks of inode %d from index %d",
                      pos.chain_id, removed, request.inode, request.from_index)
        return storage_pb2.RemoveChunksReply(removed=removed)
