"""Resync of a returning target (docs/architecture.md, "Resync"; after 3FS "Data recovery").

Both ends live here:

* Predecessor side (`Resyncer` thread): when the target after ours in a chain is SYNCING, we list
  its chunk metadata (ListChunks), diff it against our committed chunks (version, length, CRC32C),
  send every chunk that differs or is missing as a forwarded full-chunk write carrying our committed
  version, delete (Sync.remove) chunks it has and we do not, then send Sync.done. Each chunk is
  handled under the same per-chunk lock as writes, so a concurrent write (which we forward to the
  syncing target too, it being our successor) and the sync transfer of that chunk never interleave;
  whatever reaches the target last is our latest committed state. One job per chain and chain
  version; a failed or outdated job is simply run again at the new version.
* Syncing side (`handle_sync`): removals and sync-done from our predecessor. After sync-done the
  node reports the target UPTODATE in its heartbeats, and the manager makes it SERVING. Until then
  the target is SYNCING: it takes forwarded writes but serves no reads (replication checks that).

`local_state` is what heartbeats report per target: UPTODATE when SERVING (or synced), ONLINE
otherwise, so an offline/waiting target is taken through waiting -> syncing by the state table.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator, Mapping

import grpc

from chainfs.common.background import LoopThread
from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason, reason_of
from chainfs.common.rpc import ChannelPool
from chainfs.common.streams import write_requests
from chainfs.proto import meta_pb2, storage_pb2, storage_pb2_grpc
from chainfs.storageserver.chunk_ids import ChunkKey, key_of
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.locks import KeyedLocks
from chainfs.storageserver.repair import ChunkRepairer, check_copy
from chainfs.storageserver.replication import Replicator
from chainfs.storageserver.metrics import record_resync
from chainfs.storageserver.routing import SERVING, SYNCING, ChainPosition, ClusterRouting, fresh_position

log = logging.getLogger(__name__)

PAGE = 1000
RPC_TIMEOUT = config.STORAGE_RPC_TIMEOUT
LOCK_TIMEOUT = 30.0


class _Moved(Exception):
    """The chain changed under a sync job; it will run again at the new version."""


def _same(a: storage_pb2.ChunkMeta, b: storage_pb2.ChunkMeta) -> bool:
    return (a.version, a.length, a.crc) == (b.version, b.length, b.crc)


class Resyncer:
    def __init__(self, routing: ClusterRouting, replicator: Replicator, stores: Mapping[int, ChunkStore],
                 channels: ChannelPool, poll: float = 0.1, locks: KeyedLocks | None = None,
                 repairer: ChunkRepairer | None = None) -> None:
        self.routing = routing
        self.replicator = replicator
        self.locks = locks or replicator.locks  # the node's chunk locks: resync never races a write
        self.stores = stores
        self.channels = channels
        self.repairer = repairer  # our own copy is verified before it is sent, and repaired if bad
        self.poll = poll
        self._mu = threading.Lock()
        self._synced: dict[int, int] = {}            # our SYNCING target -> chain version of its sync-done
        self._running: dict[int, threading.Thread] = {}  # chain id -> job
        self._done: set[tuple[int, int]] = set()     # (chain id, chain version) synced successfully
        self._retry_at: dict[int, float] = {}
        self._background = LoopThread("resync", self._loop)
        self._stop = self._background.stopping

    # ---- local states for heartbeats ----

    def _public_state(self, target_id: int) -> tuple[int | None, int]:
        """(public state, chain version) of a target in our routing table; (None, 0) if unchained."""
        for chain in self.routing.routing.chains:
            for t in chain.targets:
                if t.target_id == target_id:
                    return t.state, chain.version
        return None, 0

    def local_state(self, target_id: int) -> int:
        """UPTODATE when serving, or syncing and told sync-done at the current chain version."""
        state, version = self._public_state(target_id)
        with self._mu:
            if state != SYNCING:
                self._synced.pop(target_id, None)
            if state is None or state == SERVING or self._synced.get(target_id) == version:
                return meta_pb2.UPTODATE
        return meta_pb2.ONLINE

    # ---- syncing side ----

    def handle_sync(self, request: storage_pb2.SyncRequest) -> storage_pb2.SyncReply:
        pos = fresh_position(self.routing, request.chain_id, request.chain_version)
        if pos is None or pos.chain_version != request.chain_version:
            raise ChainfsError(Reason.STALE_ROUTING, f"chain {request.chain_id}: sync at another chain version")
        if pos.state != SYNCING or pos.predecessor != request.from_target:
            raise ChainfsError(Reason.STALE_ROUTING,
                               f"target {pos.target_id} is not syncing from target {request.from_target}")
        store = self.stores.get(pos.target_id)
        if store is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"target {pos.target_id} is not on this node")
        removed = 0
        for chunk in request.remove:
            key = key_of(chunk)
            with self.locks.hold((pos.target_id, key), timeout=LOCK_TIMEOUT):
                if store.remove(key):
                    removed += 1
        if request.done:
            with self._mu:
                self._synced[pos.target_id] = pos.chain_version
            log.info("chain %d v%d: target %d is in sync with its predecessor %d",
                     pos.chain_id, pos.chain_version, pos.target_id, request.from_target)
        return storage_pb2.SyncReply(removed=removed)

    # ---- predecessor side ----

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        self._background.stop()
        with self._mu:
            jobs = list(self._running.values())
        for job in jobs:
            job.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self._start_jobs()
            except Exception:  # noqa: BLE001 - the loop must not die
                log.exception("resync scan failed")

    def _start_jobs(self) -> None:
        now = time.monotonic()
        for chain in self.routing.routing.chains:
            pos = self.routing.position(chain.chain_id)
            if pos is None or pos.state != SERVING or pos.successor_state != SYNCING:
                continue
            with self._mu:
                if ((pos.chain_id, pos.chain_version) in self._done or pos.chain_id in self._running
                        or now < self._retry_at.get(pos.chain_id, 0.0)):
                    continue
                job = threading.Thread(target=self._run_job, args=(pos,), daemon=True,
                                       name=f"resync-{pos.chain_id}")
                self._running[pos.chain_id] = job
            job.start()

    @property
    def jobs_running(self) -> int:
        with self._mu:
            return len(self._running)

    def _run_job(self, pos: ChainPosition) -> None:
        started = time.monotonic()
        try:
            sent, removed = self.sync_chain(pos)
            record_resync(sent, removed, time.monotonic() - started)
            with self._mu:
                self._done.add((pos.chain_id, pos.chain_version))
            log.info("chain %d v%d: synced target %d in %.2fs (%d chunks sent, %d removed)",
                     pos.chain_id, pos.chain_version, pos.successor, time.monotonic() - started, sent, removed)
        except _Moved:
            log.info("chain %d moved on during the sync of target %d; will sync again",
                     pos.chain_id, pos.successor)
        except (ChainfsError, grpc.RpcError, OSError) as exc:
            reason = exc.reason.value if isinstance(exc, ChainfsError) else (
                reason_of(exc).value if isinstance(exc, grpc.RpcError) else str(exc))
            log.warning("chain %d: sync of target %d failed (%s); retrying", pos.chain_id, pos.successor, reason)
            record_resync(0, 0, time.monotonic() - started, ok=False)
            with self._mu:
                self._retry_at[pos.chain_id] = time.monotonic() + 0.5
        finally:
            with self._mu:
                self._running.pop(pos.chain_id, None)

    def _check(self, pos: ChainPosition) -> None:
        now = self.routing.position(pos.chain_id)
        if (self._stop.is_set() or now is None or now.chain_version != pos.chain_version
                or now.state != SERVING or now.successor != pos.successor):
            raise _Moved()

    def sync_chain(self, pos: ChainPosition) -> tuple[int, int]:
        """Makes the syncing successor equal to our target; returns (chunks sent, chunks removed)."""
        store = self.stores.get(pos.target_id)
        if store is None:
            raise _Moved()
        stub = storage_pb2_grpc.StorageStub(self.channels.get(pos.successor_address))
        remote = {key_of(m.chunk): m for m in self._remote_chunks(stub, pos.chain_id)}
        local = {key_of(m.chunk): m for m in self._local_chunks(store)}
        send = sorted(k for k, m in local.items() if k not in remote or not _same(m, remote[k]))
        extra = sorted(k for k in remote if k not in local)
        sent = removed = 0
        for key in send:
            self._check(pos)
            with self.locks.hold((pos.target_id, key), timeout=LOCK_TIMEOUT):
                sent += self._send_chunk(stub, pos, store, key, key in remote)
        for key in extra:
            self._check(pos)
            with self.locks.hold((pos.target_id, key), timeout=LOCK_TIMEOUT):
                meta = store.get_meta(key)
                if meta is not None and meta.version:
                    continue  # written since the listing: the write itself reached the successor
                self._sync_call(stub, pos, remove=[key.to_proto()])
                removed += 1
        self._check(pos)
        self._sync_call(stub, pos, done=True)
        return sent, removed

    def _send_chunk(self, stub: storage_pb2_grpc.StorageStub, pos: ChainPosition, store: ChunkStore,
                    key: ChunkKey, remote_has: bool) -> int:
        meta, data, problem = check_copy(store, key)
        if problem:
            # Sending a rotten copy would fail the successor's CRC check on every retry: repair
            # ours from another serving replica (the head, say) first.
            log.error("chain %d: our copy of %s is bad (%s); repairing it before the sync", pos.chain_id, key, problem)
            if self.repairer is not None:
                self.repairer.repair_held(pos.chain_id, pos.target_id, key, "resync")
                meta, data, problem = check_copy(store, key)
            if problem:
                raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"chunk {key} is bad here and was not repaired")
        if meta is None or not meta.version:  # removed since the listing (garbage collection)
            if remote_has:
                self._sync_call(stub, pos, remove=[key.to_proto()])
            return 0
        header = storage_pb2.WriteHeader(
            chain_id=pos.chain_id, chain_version=pos.chain_version, chunk=key.to_proto(), offset=0,
            length=len(data), replace=True, data_crc=meta.crc, chunk_size=config.MAX_CHUNK_SIZE,
            request_id="", version=meta.version, from_target=pos.target_id,
        )
        reply = stub.Write(write_requests(header, data, self.replicator.message_bytes), timeout=RPC_TIMEOUT)
        if (reply.meta.version, reply.meta.crc) != (meta.version, meta.crc):
            raise ChainfsError(Reason.UNAVAILABLE, f"successor stored another version of {key}")
        return 1

    def _sync_call(self, stub: storage_pb2_grpc.StorageStub, pos: ChainPosition,
                   remove: list[storage_pb2.ChunkId] | None = None, done: bool = False) -> None:
        stub.Sync(storage_pb2.SyncRequest(chain_id=pos.chain_id, chain_version=pos.chain_version,
                                          from_target=pos.target_id, remove=remove or [], done=done),
                  timeout=RPC_TIMEOUT)

    @staticmethod
    def _remote_chunks(stub: storage_pb2_grpc.StorageStub, chain_id: int) -> Iterator[storage_pb2.ChunkMeta]:
        start = storage_pb2.ChunkId()
        while True:
            reply = stub.ListChunks(storage_pb2.ChunkListRequest(chain_id=chain_id, start_after=start, limit=PAGE),
                                    timeout=RPC_TIMEOUT)
            yield from reply.chunks
            if not reply.more or not reply.chunks:
                return
            start = reply.chunks[-1].chunk

    @staticmethod
    def _local_chunks(store: ChunkStore) -> Iterator[storage_pb2.ChunkMeta]:
        start: ChunkKey | None = None
        while True:
            chunks, more = store.list_chunks(0, start, PAGE)
            yield from chunks
            if not more or not chunks:
                return
            start = key_of(chunks[-1].chunk)
