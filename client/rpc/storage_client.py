"""The storage RPC layer: chunk writes to chain heads and batched reads from replicas.

Placement, retries and checks live here; the bytes travel over the lean data path
(`client/rpc/data_path.py`), or gRPC for nodes that publish no data address. Retryable statuses (stale
routing, pending versions, targets not serving, peers down) refresh the routing table and try
again within a deadline; a replica-local failure (bad checksum, I/O error) moves the read to
another replica; every read is checked against its CRC32C.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import grpc

from chainfs.common import capabilities, config
from chainfs.common.chains import head_target, serving_targets
from chainfs.common.checksum import crc32c
from chainfs.common.errors import ChainfsError, Reason, is_retryable, make_exception, reason_of
from chainfs.common.dataconn import local_host_id
from chainfs.common.retry import Backoff, RequestIds, call_with_retry, failure_reason
from chainfs.common.rpc import ChannelPool
from chainfs.common.streams import write_requests
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

from chainfs.client.rpc import data_path
from chainfs.client.rpc.meta_client import RoutingCache
from chainfs.client.rpc.pools import EXECUTOR, LazyPool

log = logging.getLogger(__name__)

CHANNELS = ChannelPool()
HOST_ID = local_host_id()
# a node refused the chunk capability (expired, say): renewed once, then the request is retried
CAPABILITY_REFUSALS = (Reason.UNAUTHENTICATED, Reason.PERMISSION_DENIED)

_ITEM_REASON = {
    spb.PENDING: Reason.PENDING,
    spb.STALE_ROUTING: Reason.STALE_ROUTING,
    spb.NOT_SERVING: Reason.NOT_SERVING,
    spb.INVALID: Reason.INVALID_ARGUMENT,
    spb.IO_ERROR: Reason.IO_ERROR,
    spb.CHECKSUM_MISMATCH: Reason.CHECKSUM_MISMATCH,
}


REPORTS = LazyPool("bad-copy-reports", workers=2)
REPORT_EVERY = 30.0
_REPORTED: dict[tuple[int, int, int], float] = {}  # (target, inode, index) -> when this process reported it
_REPORTED_LOCK = threading.Lock()


@dataclass
class ReadSpec:
    chain_id: int
    inode: int
    index: int
    offset: int
    length: int
    replica: int | None = None  # position in the chain to read from; None = any serving replica


@dataclass
class _Pending:
    spec: ReadSpec
    prefer_tail: bool = False
    tried: set[int] = field(default_factory=set)
    last: mpb.TargetInfo | None = None  # the replica of the latest try


def head_of(chain: mpb.ChainInfo) -> mpb.TargetInfo:
    head = head_target(chain.targets)
    if head is None:
        raise ChainfsError(Reason.NOT_SERVING, f"chain {chain.chain_id} has no serving target")
    return head


class StorageClient:
    def __init__(self, routing: RoutingCache, retry_deadline: float = 60.0,
                 timeout: float = config.STORAGE_RPC_TIMEOUT, short_circuit: bool = True) -> None:
        self.routing = routing
        self.short_circuit = short_circuit
        self.retry_deadline = retry_deadline
        self.timeout = timeout
        self._request_ids = RequestIds()

    def _stub(self, node_id: int) -> spb_grpc.StorageStub:
        return spb_grpc.StorageStub(CHANNELS.get(self.routing.node_address(node_id), self.routing.token))

    def request_id(self) -> str:
        return self._request_ids.next()

    def capability(self, inode: int, right: str) -> str:
        """The chunk capability for `right` on `inode` this client holds ("" when none)."""
        caps = getattr(self.routing, "caps", None)
        return caps.get(inode, right) if caps is not None else ""

    def renew_capability(self, inode: int, right: str) -> bool:
        """After a node refused the held capability: a new one, if there is a way to get it."""
        caps = getattr(self.routing, "caps", None)
        return caps is not None and caps.refresh(inode, right)

    def renewing(self, inode: int, right: str) -> Callable[[Reason], bool]:
        """A `call_with_retry` predicate: the retryable reasons, and once a capability refusal
        after which a new capability was got (it lapsed, or the node's clock is ahead of ours)."""
        renewed = False

        def retryable(reason: Reason) -> bool:
            nonlocal renewed
            if reason in CAPABILITY_REFUSALS and not renewed:
                renewed = True
                return self.renew_capability(inode, right)
            return is_retryable(reason)

        return retryable

    # ---- writes ----

    def write_chunk(self, chain_id: int, inode: int, index: int, data: bytes | memoryview,
                    chunk_size: int, offset: int = 0, replace: bool = True) -> spb.ChunkMeta:
        """Writes one chunk (or a range of it) through the chain's head; returns its committed meta."""
        request_id = self.request_id()
        data_crc = crc32c(data)

        def attempt() -> spb.ChunkMeta:
            chain = self.routing.chain(chain_id)
            head = head_of(chain)
            header = spb.WriteHeader(
                chain_id=chain_id, chain_version=chain.version,
                chunk=spb.ChunkId(inode=inode, index=index), offset=offset, length=len(data),
                replace=replace, data_crc=data_crc, chunk_size=chunk_size, request_id=request_id,
                capability=self.capability(inode, capabilities.WRITE),
            )
            node = self.routing.node(head.node_id)
            if node.data_address:
                return data_path.write_chunk(node.data_address, header, data, self.timeout, self.routing.token).meta
            return self._stub(head.node_id).Write(write_requests(header, data), timeout=self.timeout).meta

        try:
            return call_with_retry(attempt, self.retry_deadline, before_retry=self._refresh_quietly,
                                   what=f"write of chunk {inode}:{index}",
                                   retryable=self.renewing(inode, capabilities.WRITE))
        except (grpc.RpcError, ChainfsError) as exc:
            raise _as_error(exc, f"write of chunk {inode}:{index} on chain {chain_id}") from None

    # ---- reads ----

    def read(self, specs: list[ReadSpec], holes: set[int] | None = None) -> list[bytearray]:
        """Reads many chunk ranges into new buffers (see `read_into`)."""
        buffers = [bytearray(s.length) for s in specs]
        self.read_into(specs, [memoryview(b) for b in buffers], holes)
        return buffers

    def read_into(self, specs: list[ReadSpec], views: list[memoryview], holes: set[int] | None = None) -> None:
        """Reads many chunk ranges straight into `views` (one per spec, spec.length bytes each),
        batched per storage node; holes read as zeros.

        The positions of specs whose chunk does not exist are added to `holes`, so a caller that
        holds an inode across time can tell a sparse range from chunks collected under it.
        """
        todo = {i: _Pending(s) for i, s in enumerate(specs)}
        backoff = Backoff(self.retry_deadline)
        renewed: set[int] = set()  # inodes whose refused read capability was renewed (once each)
        last_error: Exception | None = None
        while todo:
            by_node: dict[int, list[tuple[int, spb.ReadItem, memoryview]]] = defaultdict(list)
            try:
                for i, pending in todo.items():
                    node_id, item = self._place(pending)
                    by_node[node_id].append((i, item, views[i]))
            except ChainfsError as exc:
                last_error = exc
                by_node.clear()
            failed: dict[int, Reason] = {}
            if by_node:
                batches = list(by_node.items())
                pool = EXECUTOR.get()
                futures = [pool.submit(self._read_node, n, batch) for n, batch in batches[1:]]
                outcomes = [self._read_node(*batches[0])] + [fut.result() for fut in futures]
                for done, errors, missing in outcomes:
                    if holes is not None:
                        holes.update(missing)
                    for i in done:
                        todo.pop(i)
                    failed.update(errors)
            fresh: dict[int, bool] = {}  # this round's renewals: every item of the inode tries again
            for i, reason in failed.items():
                inode = todo[i].spec.inode
                if reason in CAPABILITY_REFUSALS and (inode in fresh or inode not in renewed):
                    if inode not in fresh:
                        renewed.add(inode)
                        fresh[inode] = self.renew_capability(inode, capabilities.READ)
                    if fresh[inode]:
                        continue
                if not is_retryable(reason):
                    if reason in _REPLICA_FAULTS:
                        self._report_bad(todo[i])
                        if self._other_replica(todo[i]):
                            continue
                    s = todo[i].spec
                    raise make_exception(reason, f"read of chunk {s.inode}:{s.index} on chain {s.chain_id}")
                if reason == Reason.PENDING:
                    todo[i].prefer_tail = True
                last_error = ChainfsError(reason, reason.value)
            if todo:
                if not backoff.wait():
                    s = next(iter(todo.values())).spec
                    reason = last_error.reason if isinstance(last_error, ChainfsError) else Reason.TIMEOUT
                    raise make_exception(reason, f"read of chunk {s.inode}:{s.index} gave up after retries")
                self._refresh_quietly()

    def _report_bad(self, pending: _Pending) -> None:
        """Tells the node whose copy failed a read (bad bytes, a missing or short file) so that it
        verifies and repairs it soon; in the background, each copy at most once every
        REPORT_EVERY seconds, errors ignored."""
        target, s = pending.last, pending.spec
        if target is None:
            return
        entry = (target.target_id, s.inode, s.index)
        now = time.monotonic()
        with _REPORTED_LOCK:
            if now - _REPORTED.get(entry, -REPORT_EVERY) < REPORT_EVERY:
                return
            if len(_REPORTED) >= 4096:
                _REPORTED.clear()
            _REPORTED[entry] = now
        request = spb.RepairChunkRequest(chain_id=s.chain_id, chunk=spb.ChunkId(inode=s.inode, index=s.index),
                                         suspect=True)

        def send() -> None:
            try:
                self._stub(target.node_id).RepairChunk(request, timeout=self.timeout)
            except (grpc.RpcError, ChainfsError, OSError) as exc:
                log.debug("report of a bad copy to node %d failed: %s", target.node_id, exc)

        REPORTS.get().submit(send)

    def _other_replica(self, pending: _Pending) -> bool:
        """After a replica-local failure, moves the read to a replica not yet tried."""
        chain = self.routing.chain(pending.spec.chain_id)
        untried = [t for t in serving_targets(chain.targets) if t.target_id not in pending.tried]
        if not untried or pending.spec.replica is not None:
            return False
        return True

    def _place(self, pending: _Pending) -> tuple[int, spb.ReadItem]:
        s = pending.spec
        chain = self.routing.chain(s.chain_id)
        if s.replica is not None:
            if s.replica >= len(chain.targets):
                raise ChainfsError(Reason.INVALID_ARGUMENT, f"chain {s.chain_id} has no replica {s.replica}")
            target = chain.targets[s.replica]
        else:
            serving = serving_targets(chain.targets)
            if not serving:
                raise ChainfsError(Reason.NOT_SERVING, f"chain {s.chain_id} has no serving target")
            fresh = [t for t in serving if t.target_id not in pending.tried] or serving
            target = fresh[-1] if pending.prefer_tail else self._preferred(fresh, s.index)
        pending.tried.add(target.target_id)
        pending.last = target
        item = spb.ReadItem(chain_id=s.chain_id, chain_version=chain.version,
                            chunk=spb.ChunkId(inode=s.inode, index=s.index), offset=s.offset, length=s.length)
        return target.node_id, item

    def _preferred(self, serving: list[mpb.TargetInfo], index: int) -> mpb.TargetInfo:
        """A replica on this machine when there is one (short-circuit), else spread by chunk index."""
        if self.short_circuit:
            local = [t for t in serving if self._is_local(self.routing.node(t.node_id))]
            if local:
                return local[index % len(local)]
        return serving[index % len(serving)]

    def _is_local(self, node: mpb.NodeInfo) -> bool:
        return bool(self.short_circuit and node.local_socket and node.host_id == HOST_ID)

    def _read_node(self, node_id: int, batch: list[tuple[int, spb.ReadItem, memoryview]]
                   ) -> tuple[set[int], dict[int, Reason], set[int]]:
        done: set[int] = set()
        errors: dict[int, Reason] = {}
        missing: set[int] = set()
        try:
            node = self.routing.node(node_id)
            if self._is_local(node):
                batch = self._read_local(node, batch, done, missing)
            if batch:
                for pos, header in self._fetch(node, batch):
                    i, item, view = batch[pos]
                    reason = _check_item(header, item, view)
                    if reason is None:
                        done.add(i)
                        if header.status == spb.CHUNK_NOT_FOUND:
                            missing.add(i)
                    else:
                        errors[i] = reason
        except (grpc.RpcError, ChainfsError) as exc:
            reason = failure_reason(exc) or Reason.UNAVAILABLE
            for i, _, _ in batch:
                if i not in done:
                    errors[i] = reason
        for i, _, _ in batch:
            if i not in done and i not in errors:
                errors[i] = Reason.UNAVAILABLE  # the stream ended early
        return done, errors, missing

    def _fetch(self, node: mpb.NodeInfo, batch: list[tuple[int, spb.ReadItem, memoryview]]
               ) -> Iterator[tuple[int, spb.ReadItemHeader]]:
        items = [item for _, item, _ in batch]
        views = [view for _, _, view in batch]
        caps = self._read_caps(items)
        if node.data_address:
            return data_path.read_items(node.data_address, items, views, self.timeout, self.routing.token, caps)
        replies = self._stub(node.node_id).Read(spb.ReadRequest(items=items, capabilities=caps), timeout=self.timeout)
        return _receive_stream(replies, views)

    def _read_caps(self, items: list[spb.ReadItem]) -> list[str]:
        """One read capability per inode the items name (those this client holds)."""
        caps = (self.capability(inode, capabilities.READ) for inode in dict.fromkeys(i.chunk.inode for i in items))
        return [c for c in caps if c]

    def _read_local(self, node: mpb.NodeInfo, batch: list[tuple[int, spb.ReadItem, memoryview]],
                    done: set[int], missing: set[int]) -> list[tuple[int, spb.ReadItem, memoryview]]:
        """Short-circuit reads of a batch; returns what must still go over the network (any doubt)."""
        network: list[tuple[int, spb.ReadItem, memoryview]] = []
        for at in range(0, len(batch), data_path.MAX_LOCAL_ITEMS):
            part = batch[at:at + data_path.MAX_LOCAL_ITEMS]
            try:
                items = [item for _, item, _ in part]
                headers, fds = data_path.open_local(node.local_socket, items, self.timeout, self._read_caps(items))
            except (OSError, ChainfsError) as exc:
                log.debug("short-circuit open at %s failed (%s); reading over the network", node.local_socket, exc)
                network.extend(part)
                continue
            fd_of = iter(fds)
            for (i, item, view), header in zip(part, headers):
                if header.status == spb.OK:
                    fd = next(fd_of)
                    try:
                        ok = data_path.read_local_item(fd, header, item, view)
                    finally:
                        os.close(fd)
                    if ok:
                        _zero(view, header.length)
                        done.add(i)
                        continue
                elif header.status == spb.CHUNK_NOT_FOUND:
                    _zero(view, 0)
                    done.add(i)
                    missing.add(i)
                    continue
                network.append((i, item, view))
        return network

    # ---- inspection (fsck, tests) ----

    def list_chunks(self, chain_id: int, replica: int, inode: int = 0) -> list[spb.ChunkMeta]:
        """Chunk metadata held by one replica of a chain, all pages."""
        chain = self.routing.chain(chain_id)
        target = chain.targets[replica]
        stub = self._stub(target.node_id)
        metas: list[spb.ChunkMeta] = []
        start = spb.ChunkId()
        while True:
            reply = stub.ListChunks(spb.ChunkListRequest(chain_id=chain_id, inode=inode, start_after=start,
                                                         limit=1000), timeout=self.timeout)
            metas.extend(reply.chunks)
            if not reply.more or not reply.chunks:
                return metas
            start = reply.chunks[-1].chunk

    def _refresh_quietly(self) -> None:
        try:
            self.routing.refresh()
        except (OSError, grpc.RpcError) as exc:
            log.debug("routing refresh failed: %s", exc)


# A replica-local failure: another replica of the chain may well hold good bytes.
_REPLICA_FAULTS = {Reason.CHECKSUM_MISMATCH, Reason.IO_ERROR}


def _zero(view: memoryview, start: int) -> None:
    """A chunk shorter than asked (a sparse tail, or a hole) reads as zeros."""
    if start < len(view):
        view[start:] = bytes(len(view) - start)


def _check_item(header: spb.ReadItemHeader, item: spb.ReadItem, view: memoryview) -> Reason | None:
    """Verifies an item whose bytes are in `view`: None when good (zeros filled), else the reason."""
    if header.status == spb.CHUNK_NOT_FOUND:
        _zero(view, 0)
        return None
    if header.status != spb.OK:
        return _ITEM_REASON.get(header.status, Reason.IO_ERROR)
    data = view[:header.length]
    if len(data) != header.length or crc32c(data) != header.data_crc:
        return Reason.CHECKSUM_MISMATCH
    if item.offset == 0 and header.length == header.meta.length and header.data_crc != header.meta.crc:
        return Reason.CHECKSUM_MISMATCH
    _zero(view, header.length)
    return None


def _receive_stream(replies: Iterator[spb.ReadReply], views: list[memoryview]
                    ) -> Iterator[tuple[int, spb.ReadItemHeader]]:
    """The gRPC Read stream, its data copied into the views (nodes without a data address)."""
    header: spb.ReadItemHeader | None = None
    got = 0
    for reply in replies:
        if reply.HasField("header"):
            if header is not None:
                yield header.item, header
            header, got = reply.header, 0
            if header.item >= len(views):
                raise ChainfsError(Reason.INTERNAL, f"reply for item {header.item} of {len(views)}")
        elif header is not None:
            view = views[header.item]
            n = len(reply.data)
            if got + n > len(view):
                header.status = spb.CHECKSUM_MISMATCH
            else:
                view[got:got + n] = reply.data
            got += n
    if header is not None:
        yield header.item, header


def _as_error(exc: BaseException, what: str) -> Exception:
    if isinstance(exc, ChainfsError):
        return make_exception(exc.reason, f"{what}: {exc.message}")
    assert isinstance(exc, grpc.RpcError)
    reason = reason_of(exc)
    details = exc.details() if hasattr(exc, "details") else ""
    return make_exception(reason, f"{what}: {details or reason.value}")
