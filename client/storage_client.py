"""The storage RPC layer: chunk writes to chain heads and batched reads from replicas.

Retryable statuses (stale routing, pending versions, targets not serving, peers down) refresh the
routing table and try again within a deadline; every read is checked against its CRC32C.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import grpc

from chainfs.common import config
from chainfs.common.checksum import crc32c
from chainfs.common.errors import ChainfsError, Reason, is_retryable, make_exception, reason_of
from chainfs.common.rpc import ChannelPool
from chainfs.common.streams import write_requests
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

from chainfs.client.meta_client import RoutingCache
from chainfs.client.retry import Backoff, failure_reason

log = logging.getLogger(__name__)

CHANNELS = ChannelPool()

_ITEM_REASON = {
    spb.PENDING: Reason.PENDING,
    spb.STALE_ROUTING: Reason.STALE_ROUTING,
    spb.NOT_SERVING: Reason.NOT_SERVING,
    spb.INVALID: Reason.INVALID_ARGUMENT,
    spb.IO_ERROR: Reason.IO_ERROR,
    spb.CHECKSUM_MISMATCH: Reason.CHECKSUM_MISMATCH,
}


class LazyPool:
    """A process-wide thread pool, created on first use and rebuilt after a fork.

    Work that waits on a pool must never run inside that same pool (it could starve), so each
    level of fan-out (files, then chunks) has its own.
    """

    def __init__(self, name: str, workers: int = 16) -> None:
        self.name = name
        self.workers = workers
        self._lock = threading.Lock()
        self._pid = -1
        self._pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
                self._pid = os.getpid()
            return self._pool


EXECUTOR = LazyPool("chunk-io")


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


def serving_targets(chain: mpb.ChainInfo) -> list[mpb.TargetInfo]:
    return [t for t in chain.targets if t.state == mpb.SERVING]


def head_of(chain: mpb.ChainInfo) -> mpb.TargetInfo:
    serving = serving_targets(chain)
    if not serving:
        raise ChainfsError(Reason.NOT_SERVING, f"chain {chain.chain_id} has no serving target")
    return serving[0]


class StorageClient:
    def __init__(self, routing: RoutingCache, retry_deadline: float = 60.0,
                 timeout: float = config.STORAGE_RPC_TIMEOUT) -> None:
        self.routing = routing
        self.retry_deadline = retry_deadline
        self.timeout = timeout
        self._client_id = ""
        self._client_pid = -1
        self._seq = itertools.count(1)

    def _stub(self, node_id: int) -> spb_grpc.StorageStub:
        return spb_grpc.StorageStub(CHANNELS.get(self.routing.node_address(node_id)))

    def request_id(self) -> str:
        if self._client_pid != os.getpid():  # a forked child is another client
            self._client_id, self._client_pid = uuid.uuid4().hex, os.getpid()
        return f"{self._client_id}:{next(self._seq)}"

    # ---- writes ----

    def write_chunk(self, chain_id: int, inode: int, index: int, data: bytes | memoryview,
                    chunk_size: int, offset: int = 0, replace: bool = True) -> spb.ChunkMeta:
        """Writes one chunk (or a range of it) through the chain's head; returns its committed meta."""
        request_id = self.request_id()
        data_crc = crc32c(data)
        backoff = Backoff(self.retry_deadline)
        while True:
            try:
                chain = self.routing.chain(chain_id)
                head = head_of(chain)
                header = spb.WriteHeader(
                    chain_id=chain_id, chain_version=chain.version,
                    chunk=spb.ChunkId(inode=inode, index=index), offset=offset, length=len(data),
                    replace=replace, data_crc=data_crc, chunk_size=chunk_size, request_id=request_id,
                )
                reply = self._stub(head.node_id).Write(write_requests(header, data), timeout=self.timeout)
                return reply.meta
            except (grpc.RpcError, ChainfsError) as exc:
                reason = failure_reason(exc)
                if not is_retryable(reason) or not backoff.wait():
                    raise _as_error(exc, f"write of chunk {inode}:{index} on chain {chain_id}") from None
                self._refresh_quietly()

    # ---- reads ----

    def read(self, specs: list[ReadSpec], holes: set[int] | None = None) -> list[bytes]:
        """Reads many chunk ranges, batched per storage node; holes read as zeros.

        The positions of specs whose chunk does not exist are added to `holes`, so a caller that
        holds an inode across time can tell a sparse range from chunks collected under it.
        """
        results: list[bytes | None] = [None] * len(specs)
        todo = {i: _Pending(s) for i, s in enumerate(specs)}
        backoff = Backoff(self.retry_deadline)
        last_error: Exception | None = None
        while todo:
            by_node: dict[int, list[tuple[int, spb.ReadItem]]] = defaultdict(list)
            try:
                for i, pending in todo.items():
                    node_id, item = self._place(pending)
                    by_node[node_id].append((i, item))
            except ChainfsError as exc:
                last_error = exc
                by_node.clear()
            failed: dict[int, Reason] = {}
            if by_node:
                pool = EXECUTOR.get()
                futures = [pool.submit(self._read_node, n, batch) for n, batch in by_node.items()]
                for fut in futures:
                    done, errors, missing = fut.result()
                    if holes is not None:
                        holes.update(missing)
                    for i, data in done.items():
                        results[i] = data
                        todo.pop(i)
                    failed.update(errors)
            for i, reason in failed.items():
                if not is_retryable(reason):
                    if reason == Reason.CHECKSUM_MISMATCH and self._other_replica(todo[i]):
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
        return [r if r is not None else b"" for r in results]

    def _other_replica(self, pending: _Pending) -> bool:
        """After a checksum mismatch, moves the read to a replica not yet tried."""
        chain = self.routing.chain(pending.spec.chain_id)
        untried = [t for t in serving_targets(chain) if t.target_id not in pending.tried]
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
            serving = serving_targets(chain)
            if not serving:
                raise ChainfsError(Reason.NOT_SERVING, f"chain {s.chain_id} has no serving target")
            fresh = [t for t in serving if t.target_id not in pending.tried] or serving
            target = fresh[-1] if pending.prefer_tail else fresh[s.index % len(fresh)]
        pending.tried.add(target.target_id)
        item = spb.ReadItem(chain_id=s.chain_id, chain_version=chain.version,
                            chunk=spb.ChunkId(inode=s.inode, index=s.index), offset=s.offset, length=s.length)
        return target.node_id, item

    def _read_node(self, node_id: int, batch: list[tuple[int, spb.ReadItem]]
                   ) -> tuple[dict[int, bytes], dict[int, Reason], set[int]]:
        done: dict[int, bytes] = {}
        errors: dict[int, Reason] = {}
        missing: set[int] = set()
        try:
            stub = self._stub(node_id)
            replies = stub.Read(spb.ReadRequest(items=[item for _, item in batch]), timeout=self.timeout)
            for pos, header, data in _collect_items(replies):
                i, item = batch[pos]
                if header.status == spb.OK:
                    if crc32c(data) != header.data_crc or len(data) != header.length:
                        errors[i] = Reason.CHECKSUM_MISMATCH
                        continue
                    covers_chunk = item.offset == 0 and len(data) == header.meta.length
                    if covers_chunk and header.data_crc != header.meta.crc:
                        errors[i] = Reason.CHECKSUM_MISMATCH
                        continue
                    done[i] = _pad(data, item)
                elif header.status == spb.CHUNK_NOT_FOUND:
                    done[i] = bytes(item.length)
                    missing.add(i)
                else:
                    errors[i] = _ITEM_REASON.get(header.status, Reason.IO_ERROR)
        except (grpc.RpcError, ChainfsError) as exc:
            reason = failure_reason(exc)
            for i, _ in batch:
                if i not in done:
                    errors[i] = reason
        for i, _ in batch:
            if i not in done and i not in errors:
                errors[i] = Reason.UNAVAILABLE  # the stream ended early
        return done, errors, missing

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


def _pad(data: bytes, item: spb.ReadItem) -> bytes:
    """A chunk shorter than the file says (a sparse tail) reads as zeros up to the asked length."""
    if len(data) >= item.length:
        return data
    return data + bytes(item.length - len(data))


def _collect_items(replies: Iterator[spb.ReadReply]) -> Iterator[tuple[int, spb.ReadItemHeader, bytes]]:
    header: spb.ReadItemHeader | None = None
    parts: list[bytes] = []
    for reply in replies:
        if reply.HasField("header"):
            if header is not None:
                yield header.item, header, b"".join(parts)
            header, parts = reply.header, []
        else:
            parts.append(reply.data)
    if header is not None:
        yield header.item, header, b"".join(parts)


def _as_error(exc: BaseException, what: str) -> Exception:
    if isinstance(exc, ChainfsError):
        return make_exception(exc.reason, f"{what}: {exc.message}")
    assert isinstance(exc, grpc.RpcError)
    reason = reason_of(exc)
    details = exc.details() if hasattr(exc, "details") else ""
    return make_exception(reason, f"{what}: {details or reason.value}")
