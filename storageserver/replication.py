"""CRAQ along a chain (DESIGN "Replication: CRAQ", rules 1-5).

Writes: the head checks chain version, headship and the client's CRC, then under the chunk's lock
builds the new content (copy-on-write: committed content patched with the update), stages it as
pending version committed+1, forwards the FULL new content down the chain and commits once the
successor has acknowledged (the tail commits at once). Successors take the predecessor's version as
authoritative.

A forward that fails (successor down, stale routing) or hangs while the chain version moves (the
successor was declared dead, e.g. SIGSTOPped) is re-forwarded to whatever successor the newest
routing names (or committed here when we became the tail), until the hop's deadline; only then is
the pending version discarded and the write failed with a retryable status. Not aborting early
matters: a successor may already have committed the update, and discarding it here would leave
replicas that disagree. Request ids make every retry apply once.

Reads: any SERVING replica answers from committed data only; a non-tail replica holding a pending
version answers PENDING instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Hashable, Iterator, Mapping

import grpc

from chainfs.common import config
from chainfs.common.checksum import crc32c
from chainfs.common.errors import ChainfsError, Reason, is_retryable, reason_of
from chainfs.common.streams import pieces, write_requests
from chainfs.common.rpc import ChannelPool
from chainfs.proto import storage_pb2, storage_pb2_grpc
from chainfs.storageserver.chunk_store import (
    MAX_INDEX,
    ChunkKey,
    ChunkStore,
    chunk_key,
    key_of,
    validate_write,
)
from chainfs.storageserver.metrics import record_io
from chainfs.storageserver.routing import SERVING, SYNCING, ChainPosition, RoutingView

log = logging.getLogger(__name__)

# Failures of a successor that are passed to the client as they are (retrying will not help).
_PASS_THROUGH = {Reason.NO_SPACE, Reason.TOO_LARGE, Reason.IO_ERROR, Reason.INVALID_ARGUMENT}


class _Rerouted(Exception):
    """The chain version moved while a forward was in flight: forward again to the new successor."""


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._locks: dict[Hashable, list] = {}

    @contextlib.contextmanager
    def hold(self, key: Hashable, timeout: float = -1) -> Iterator[None]:
        with self._mu:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            if not entry[0].acquire(timeout=timeout):
                raise ChainfsError(Reason.BUSY, f"chunk {key} is busy")
            try:
                yield
            finally:
                entry[0].release()
        finally:
            with self._mu:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]



def _copy_meta(meta: storage_pb2.ChunkMeta) -> storage_pb2.ChunkMeta:
    out = storage_pb2.ChunkMeta()
    out.CopyFrom(meta)
    return out


class Replicator:
    """The storage service's logic, independent of gRPC servicer plumbing."""

    def __init__(self, routing: RoutingView, stores: Mapping[int, ChunkStore],
                 channels: ChannelPool | None = None, *,
                 rpc_timeout: float = config.STORAGE_RPC_TIMEOUT,
                 message_bytes: int = config.STREAM_MESSAGE_BYTES,
                 max_client_updates: int = 0) -> None:
        self.routing = routing
        self.stores = stores  # target id -> store; may be filled after registration
        self.channels = channels or ChannelPool()
        self.rpc_timeout = rpc_timeout
        self.message_bytes = message_bytes
        self.locks = KeyedLocks()
        # Client updates wait on successors while holding an RPC worker; forwarded ones must always
        # find a free worker, or nodes that head each other's chains could deadlock. So updates that
        # start here are capped (0 = no cap) and refused with BUSY (retryable) beyond the cap.
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
        pos = self.routing.position(chain_id)
        if pos is None or pos.chain_version < chain_version:
            self.routing.refresh()
            pos = self.routing.position(chain_id)
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

    def write(self, requests: Iterator[storage_pb2.WriteRequest],
              time_remaining: float | None = None) -> storage_pb2.WriteReply:
        deadline = self._deadline(time_remaining)
        started = time.monotonic()
        first = next(requests, None)
        if first is None or first.WhichOneof("body") != "header":
            raise ChainfsError(Reason.INVALID_ARGUMENT, "a write stream starts with its header")
        h = first.header
        key = key_of(h.chunk)
        validate_write(h.chunk_size, h.offset, h.length, h.replace)
        forwarded = h.from_target != 0
        if forwarded and (not h.replace or h.version == 0):
            raise ChainfsError(Reason.INVALID_ARGUMENT, "a forwarded write carries a versioned full chunk")
        pos = self._position(h.chain_id, h.chain_version)
        self._check_sender(pos, h.from_target)
        store = self._store(pos)
        data = self._receive(requests, h.length)
        if crc32c(data) != h.data_crc:
            raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"data of chunk {key} does not match its CRC32C")
        with self._admit(h.from_target), self.locks.hold((pos.target_id, key), timeout=self._left(deadline)):
            pos = self._recheck(pos)
            apply = self._apply_forwarded if forwarded else self._apply_at_head
            reply = apply(pos, store, key, h, data, deadline)
        record_io(pos.target_id, "write", h.length, time.monotonic() - started)
        return reply

    def _receive(self, requests: Iterator[storage_pb2.WriteRequest], length: int) -> bytearray:
        buf = bytearray(length)
        got = 0
        for msg in requests:
            if msg.WhichOneof("body") != "data":
                raise ChainfsError(Reason.INVALID_ARGUMENT, "only data messages follow the header")
            n = len(msg.data)
            if got + n > length:
                raise ChainfsError(Reason.INVALID_ARGUMENT, f"more than the announced {length} bytes of data")
            buf[got:got + n] = msg.data
            got += n
        if got != length:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"got {got} of the announced {length} bytes of data")
        return buf

    def _apply_at_head(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey,
                       h: storage_pb2.WriteHeader, data: bytearray, deadline: float) -> storage_pb2.WriteReply:
        record = store.get_record(key)
        if record is not None and h.request_id and h.request_id in record.recent_requests:
            log.debug("duplicate write %s of %s", h.request_id, key)
            meta = _copy_meta(record.meta)
            meta.pending_version = 0
            return storage_pb2.WriteReply(meta=meta, duplicate=True)
        committed = record.meta.version if record is not None else 0
        if h.replace:
            content, crc = data, h.data_crc
        else:
            content = self._patched(store, key, h.offset, data)
            crc = crc32c(content)
        version = committed + 1
        store.stage(key, version, content)
        return self._forward_and_commit(pos, store, key, h, version, content, crc, deadline)

    def _patched(self, store: ChunkStore, key: ChunkKey, offset: int, data: bytearray) -> bytearray:
        """Committed content with `data` written at `offset` (zeros fill any gap)."""
        base = store.read_committed(key)
        old = b""
        if base is not None:
            meta, old = base
            if crc32c(old) != meta.crc:
                log.error("chunk %s: committed data does not match its CRC32C", key)
                raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"committed data of chunk {key} is corrupt")
        end = offset + len(data)
        content = bytearray(max(len(old), end))
        content[: len(old)] = old
        content[offset:end] = data
        return content

    def _apply_forwarded(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey,
                         h: storage_pb2.WriteHeader, data: bytearray, deadline: float) -> storage_pb2.WriteReply:
        record = store.get_record(key)
        if (record is not None and h.request_id and h.request_id in record.recent_requests
                and record.meta.version == h.version and record.meta.crc == h.data_crc
                and record.meta.length == h.length and not record.meta.pending_version):
            # A retry of an update this replica (and so every replica after it) already committed.
            return storage_pb2.WriteReply(meta=_copy_meta(record.meta), duplicate=True)
        store.stage(key, h.version, data)
        return self._forward_and_commit(pos, store, key, h, h.version, data, h.data_crc, deadline)

    def _forward_and_commit(self, pos: ChainPosition, store: ChunkStore, key: ChunkKey,
                            h: storage_pb2.WriteHeader, version: int, content: bytearray, crc: int,
                            deadline: float) -> storage_pb2.WriteReply:
        forwarding = bool(pos.successor)
        try:
            pos, acked = self._forward_until_acked(pos, h, version, content, crc, deadline)
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
            try:
                store.abort_pending(key)
            except Exception:  # noqa: BLE001 - keep the original failure
                log.exception("chunk %s: could not discard pending version %d", key, version)
            raise
        return storage_pb2.WriteReply(meta=meta)

    def _forward_until_acked(self, pos: ChainPosition, h: storage_pb2.WriteHeader, version: int,
                             content: bytearray, crc: int, deadline: float) -> tuple[ChainPosition, bool]:
        """Forwards to the current successor until one acknowledges; returns the position used and
        whether a successor acknowledged (False: we are, or became, the tail)."""
        while pos.successor:
            try:
                self._forward_write(pos, h, version, content, crc, deadline)
                return pos, True
            except _Rerouted:
                pass
            except ChainfsError as exc:
                if exc.reason not in (Reason.UNAVAILABLE, Reason.STALE_ROUTING):
                    raise
                if deadline - time.monotonic() <= 0.06:
                    raise  # out of time: the client retries (with refreshed routing)
                time.sleep(0.05)
                self.routing.refresh()
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

    def _forward_write(self, pos: ChainPosition, h: storage_pb2.WriteHeader, version: int,
                       content: bytearray, crc: int, deadline: float) -> None:
        header = storage_pb2.WriteHeader(
            chain_id=h.chain_id, chain_version=pos.chain_version, chunk=h.chunk, offset=0,
            length=len(content), replace=True, data_crc=crc, chunk_size=h.chunk_size,
            request_id=h.request_id, version=version, from_target=pos.target_id,
        )
        stub = self._stub(pos)
        call = stub.Write.future(write_requests(header, content, self.message_bytes),
                                   timeout=self._left(deadline))
        while True:
            try:
                reply = call.result(timeout=0.1)
                break
            except grpc.FutureTimeoutError:
                # A successor that hangs (paused) is replaced by the manager; heartbeats bring the
                # new routing within an interval, so watching our copy of it is enough.
                now = self.routing.position(pos.chain_id)
                if now is None or now.chain_version != pos.chain_version:
                    call.cancel()
                    raise _Rerouted() from None
            except grpc.FutureCancelledError:
                raise _Rerouted() from None
            except grpc.RpcError as err:
                raise self._forward_error(pos, err) from None
        m = reply.meta
        if m.version != version or m.length != len(content) or m.crc != crc:
            log.error("chain %d: successor %d acknowledged version %d/%d bytes/crc %08x, expected %d/%d/%08x",
                      pos.chain_id, pos.successor, m.version, m.length, m.crc, version, len(content), crc)
            raise ChainfsError(Reason.UNAVAILABLE, f"successor {pos.successor} acknowledged a different chunk")

    def _stub(self, pos: ChainPosition) -> storage_pb2_grpc.StorageStub:
        if not pos.successor_address:
            raise ChainfsError(Reason.UNAVAILABLE, f"no address for successor target {pos.successor}")
        return storage_pb2_grpc.StorageStub(self.channels.get(pos.successor_address))

    @staticmethod
    def _forward_error(pos: ChainPosition, err: grpc.RpcError) -> ChainfsError:
        reason = reason_of(err)
        details = err.details() if hasattr(err, "details") else str(err)
        log.warning("chain %d: forwarding to target %d at %s failed: %s: %s",
                    pos.chain_id, pos.successor, pos.successor_address, reason.value, details)
        if reason in _PASS_THROUGH:
            mapped = reason
        elif reason in (Reason.STALE_ROUTING, Reason.NOT_SERVING):
            mapped = Reason.STALE_ROUTING
        else:
            mapped = Reason.UNAVAILABLE
        return ChainfsError(mapped, f"successor target {pos.successor} failed: {reason.value}: {details}")

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
                self._stub(pos).RemoveChunks(forward, timeout=self._left(deadline))
            except grpc.RpcError as err:
                raise self._forward_error(pos, err) from None
        if removed:
            log.debug("chain %d: removed %d chunks of inode %d from index %d",
                      pos.chain_id, removed, request.inode, request.from_index)
        return storage_pb2.RemoveChunksReply(removed=removed)

    # ---- listing ----

    def list_chunks(self, request: storage_pb2.ChunkListRequest) -> storage_pb2.ChunkListReply:
        pos = self.routing.position(request.chain_id)
        if pos is None:
            self.routing.refresh()
            pos = self.routing.position(request.chain_id)
        if pos is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"no target of chain {request.chain_id} on this node")
        store = self._store(pos)
        start_after = None
        if request.HasField("start_after") and request.start_after.inode:
            start_after = key_of(request.start_after)
        chunks, more = store.list_chunks(request.inode, start_after, request.limit)
        return storage_pb2.ChunkListReply(chunks=chunks, more=more)

    # ---- reads ----

    def read(self, request: storage_pb2.ReadRequest) -> Iterator[storage_pb2.ReadReply]:
        refreshed = False
        for i, item in enumerate(request.items):
            pos = self.routing.position(item.chain_id)
            if not refreshed and (pos is None or pos.chain_version < item.chain_version):
                self.routing.refresh()
                refreshed = True
                pos = self.routing.position(item.chain_id)
            started = time.monotonic()
            header, data = self._read_item(i, item, pos)
            if data is not None and pos is not None:
                record_io(pos.target_id, "read", len(data), time.monotonic() - started)
            yield storage_pb2.ReadReply(header=header)
            for piece in pieces(data or b"", self.message_bytes):
                yield storage_pb2.ReadReply(data=piece)

    def _read_item(self, i: int, item: storage_pb2.ReadItem,
                   pos: ChainPosition | None) -> tuple[storage_pb2.ReadItemHeader, bytearray | None]:
        def status(code: int, message: str, meta: storage_pb2.ChunkMeta | None = None
                   ) -> tuple[storage_pb2.ReadItemHeader, None]:
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
            if meta is None or meta.version == 0:
                return status(storage_pb2.CHUNK_NOT_FOUND, f"chunk {key} not found")
            opened = store.open_committed(key)
            if opened is None:
                return status(storage_pb2.CHUNK_NOT_FOUND, f"chunk {key} not found")
            meta, f = opened
            with f:
                start = min(item.offset, meta.length)
                end = min(item.offset + item.length, meta.length)
                data = bytearray(end - start)
                f.seek(start)
                got = f.readinto(data) if data else 0
            if got != len(data):
                log.error("chunk %s: file shorter than its metadata (%d bytes)", key, meta.length)
                return status(storage_pb2.IO_ERROR, f"chunk {key} is truncated on disk", meta)
        except ChainfsError as exc:
            # A retryable failure (a version swap under way) is answered as in-flight, so the
            # client tries again; anything else is an I/O error.
            code = storage_pb2.PENDING if is_retryable(exc.reason) else storage_pb2.IO_ERROR
            return status(code, exc.message)
        except OSError as exc:
            log.error("chunk %s: read failed: %s", key, exc)
            return status(storage_pb2.IO_ERROR, f"read of chunk {key} failed: {exc}")
        crc = crc32c(data)
        if start == 0 and end == meta.length and crc != meta.crc:
            log.error("chunk %s version %d: data does not match its CRC32C (disk corruption?)", key, meta.version)
            return status(storage_pb2.CHECKSUM_MISMATCH, f"chunk {key} is corrupt on this replica", meta)
        header = storage_pb2.ReadItemHeader(item=i, status=storage_pb2.OK, meta=meta, length=len(data),
                                            data_crc=crc)
        return header, data
