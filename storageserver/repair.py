"""Verifying a replica's committed chunk, and repairing a bad one from a good replica of the chain
(docs/architecture.md, "Scrub and repair").

A copy is bad when its file is missing, shorter than its metadata, or its bytes do not match the
stored CRC32C (whole chunk and 64 KiB blocks). The metadata itself is the truth: it was written in
the same synced batch as the commit. A repair runs under the chunk's lock (the node's KeyedLocks, as
writes and resync), fetches the committed chunk from another SERVING replica of the chain (whose
reader verifies what it serves), checks it against our own metadata (same version, length, CRC),
and installs it as the same committed version (`ChunkStore.replace_committed`, the same-name `.new`
swap that commits use). Scrub, resync, appends onto a rotten chunk and the RepairChunk RPC (fsck
--repair) all repair through here.
"""

from __future__ import annotations

import logging
from typing import Mapping

import grpc

from chainfs.common import config
from chainfs.common.checksum import BLOCK_BYTES, blocks_match, crc32c
from chainfs.common.errors import ChainfsError, Reason, reason_of
from chainfs.common.rpc import ChannelPool
from chainfs.proto import meta_pb2, storage_pb2, storage_pb2_grpc
from chainfs.storageserver.chunk_ids import ChunkKey
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.locks import KeyedLocks
from chainfs.storageserver.metrics import record_repair
from chainfs.storageserver.routing import ClusterRouting

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 30.0


def check_copy(store: ChunkStore, key: ChunkKey) -> tuple[storage_pb2.ChunkMeta | None, bytes, str]:
    """Reads a committed chunk whole and verifies it: (meta, data, problem); problem is "" for a
    good copy, and meta None when there is no committed chunk."""
    try:
        got = store.read_committed(key)
    except ChainfsError as exc:
        if exc.reason != Reason.IO_ERROR:
            raise
        return store.get_meta(key), b"", exc.message
    except OSError as exc:
        return store.get_meta(key), b"", f"read failed: {exc}"
    if got is None:
        return None, b"", ""
    meta, data = got
    # The block CRCs cover every byte (read_committed checked the length), so with them one CRC
    # pass suffices; chunks stored without them are checked against the whole-chunk CRC.
    if meta.block_crcs:
        good = len(meta.block_crcs) == -(-len(data) // BLOCK_BYTES) and blocks_match(memoryview(data), 0,
                                                                                     meta.block_crcs)
    else:
        good = crc32c(data) == meta.crc
    return meta, data, "" if good else "data does not match its CRC32C"


class ChunkRepairer:
    """Repairs this node's bad chunk copies from the other serving replicas of their chains."""

    def __init__(self, routing: ClusterRouting, stores: Mapping[int, ChunkStore], channels: ChannelPool,
                 locks: KeyedLocks, timeout: float = config.STORAGE_RPC_TIMEOUT) -> None:
        self.routing = routing
        self.stores = stores
        self.channels = channels
        self.locks = locks
        self.timeout = timeout

    def repair(self, chain_id: int, target_id: int, key: ChunkKey, cause: str) -> bool:
        """Takes the chunk's lock, then `repair_held`."""
        with self.locks.hold((target_id, key), timeout=LOCK_TIMEOUT):
            return self.repair_held(chain_id, target_id, key, cause)

    def repair_held(self, chain_id: int, target_id: int, key: ChunkKey, cause: str) -> bool:
        """Re-verifies our copy (the caller holds the chunk's lock) and, when bad, replaces it with
        a good replica's; returns whether it repaired. Raises when it is bad and no replica could
        give a good copy (counted as a failed repair)."""
        store = self.stores.get(target_id)
        if store is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"target {target_id} is not on this node")
        meta, _, problem = check_copy(store, key)
        if meta is None or not meta.version or not problem:
            return False
        try:
            data = self._fetch(chain_id, target_id, key, meta)
            store.replace_committed(key, meta.version, data)
        except ChainfsError as exc:
            record_repair(cause, ok=False)
            log.error("chain %d target %d chunk %s v%d is bad (%s) and could not be repaired: %s",
                      chain_id, target_id, key, meta.version, problem, exc.message)
            raise
        record_repair(cause, ok=True)
        log.warning("chain %d target %d: repaired chunk %s v%d (%s) from a good replica (%s)",
                    chain_id, target_id, key, meta.version, problem, cause)
        return True

    def _peers(self, chain_id: int, target_id: int) -> tuple[meta_pb2.ChainInfo, list[str]]:
        table = self.routing.routing
        chain = next((c for c in table.chains if c.chain_id == chain_id), None)
        if chain is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"chain {chain_id} is not in the routing table")
        addresses = {n.node_id: n.address for n in table.nodes}
        peers = [addresses[t.node_id] for t in chain.targets
                 if t.target_id != target_id and t.state == meta_pb2.SERVING and t.node_id in addresses]
        return chain, peers

    def _fetch(self, chain_id: int, target_id: int, key: ChunkKey, meta: storage_pb2.ChunkMeta) -> bytes:
        """The committed chunk from the first serving peer that has exactly our version, verified."""
        chain, peers = self._peers(chain_id, target_id)
        reasons: list[str] = []
        item = storage_pb2.ReadItem(chain_id=chain_id, chain_version=chain.version, chunk=key.to_proto(),
                                    offset=0, length=meta.length)
        for address in peers:
            stub = storage_pb2_grpc.StorageStub(self.channels.get(address))
            try:
                header, parts = None, []
                for reply in stub.Read(storage_pb2.ReadRequest(items=[item]), timeout=self.timeout):
                    if reply.HasField("header"):
                        header = reply.header
                    else:
                        parts.append(reply.data)
            except grpc.RpcError as err:
                reasons.append(f"{address}: {reason_of(err).value}")
                continue
            data = b"".join(parts)
            if header is None or header.status != storage_pb2.OK:
                status = "no answer" if header is None else storage_pb2.ItemStatus.Name(header.status).lower()
                reasons.append(f"{address}: {status}")
                continue
            if (header.meta.version, header.meta.length, header.meta.crc) != (meta.version, meta.length, meta.crc) \
                    or len(data) != meta.length or crc32c(data) != meta.crc:
                reasons.append(f"{address}: holds another version")
                continue
            return data
        raise ChainfsError(Reason.UNAVAILABLE, f"no serving replica gave a good copy of {key}: "
                                               + ("; ".join(reasons) or "no other serving replica"))
