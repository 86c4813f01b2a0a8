"""CloseWrite lengths checked against the chunks the session wrote, and against the size bounds.

Why: a file's length is what the client says at CloseWrite, and chunk data never passes through the
metaserver; a hostile or buggy `CloseWrite(length=2**64-1)` would publish a file whose size no chunk
backs (it listed with that size and read as zeros). So a length must be within the bounds every
process agrees on (`config.MAX_FILE_SIZE`, and chunk indexes within `config.MAX_CHUNK_INDEX`), and,
as 3FS's meta service asks storage for a file's last chunk, the chunk holding the new last byte must
exist on its chain and end exactly there (the invariant fsck checks). The question goes to the
chain's first serving target, the one that acknowledged the writes (CRAQ: an acknowledged write is
committed on every replica).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason, reason_of
from chainfs.common.rpc import ChannelPool
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.proto import meta_pb2 as pb
from chainfs.proto import storage_pb2, storage_pb2_grpc

log = logging.getLogger(__name__)

RPC_TIMEOUT = 5.0
PARALLEL_CHECKS = 16  # a batched close asks for its files' last chunks at once


def max_length(layout: pb.Layout) -> int:
    """The largest length a file of this layout may have."""
    return min(config.MAX_FILE_SIZE, layout.chunk_size * (config.MAX_CHUNK_INDEX + 1))


def check_length_bound(inode: pb.Inode, length: int, where: str) -> None:
    limit = max_length(inode.layout)
    if length > limit:
        raise ChainfsError(Reason.INVALID_ARGUMENT,
                           f"length {length} exceeds the maximum file size {limit}: {where}")


class ChunkExtentCheck:
    """Asks the chain of a file's last chunk whether that chunk ends at the length being committed."""

    def __init__(self, cluster: ClusterManager, channels: ChannelPool | None = None,
                 timeout: float = RPC_TIMEOUT) -> None:
        self.cluster = cluster
        self.channels = channels or ChannelPool()
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_CHECKS, thread_name_prefix="extent-check")

    def check_many(self, items: list[tuple[pb.Inode, int, str]]) -> list[ChainfsError | None]:
        """Checks (inode, length, path) items in parallel; each gets None or its refusal."""
        def one(item: tuple[pb.Inode, int, str]) -> ChainfsError | None:
            try:
                self(*item)
                return None
            except ChainfsError as exc:
                return exc
        if len(items) == 1:
            return [one(items[0])]
        return list(self._pool.map(one, items))

    def __call__(self, inode: pb.Inode, length: int, where: str) -> None:
        """Raises INVALID_ARGUMENT when the chunks disagree; a retryable reason when storage is away."""
        layout = inode.layout
        if length == 0 or not layout.chains:
            return
        index = (length - 1) // layout.chunk_size
        chain_id = layout.chains[index % len(layout.chains)]
        end = index * layout.chunk_size + self._chunk_length(chain_id, inode.id, index, where)
        if end != length:
            held = "no chunk holds it" if end == index * layout.chunk_size else f"its chunk ends at byte {end}"
            raise ChainfsError(Reason.INVALID_ARGUMENT,
                               f"length {length} does not match the chunks written ({held}): {where}")

    def _chunk_length(self, chain_id: int, inode_id: int, index: int, where: str) -> int:
        """The committed length of chunk (inode, index) on its chain; 0 when it does not exist."""
        try:
            chain = self.cluster.chain_info(chain_id)
        except KeyError:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"the file's chain {chain_id} is unknown: {where}") from None
        head = next((t for t in chain.targets if t.state == pb.SERVING), None)
        if head is None:
            raise ChainfsError(Reason.NOT_SERVING, f"chain {chain_id} has no serving target to check: {where}")
        address = self.cluster.node_info(head.node_id).address
        after = storage_pb2.ChunkId(inode=inode_id, index=index - 1) if index else None
        request = storage_pb2.ChunkListRequest(chain_id=chain_id, inode=inode_id, start_after=after, limit=1)
        try:
            reply = storage_pb2_grpc.StorageStub(self.channels.get(address)).ListChunks(request, timeout=self.timeout)
        except grpc.RpcError as err:
            reason = reason_of(err)
            raise ChainfsError(reason if reason != Reason.INVALID_ARGUMENT else Reason.UNAVAILABLE,
                               f"cannot check the chunks on chain {chain_id}: {err.details()}: {where}") from None
        for meta in reply.chunks:
            if meta.chunk.inode == inode_id and meta.chunk.index == index:
                return meta.length
        return 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.channels.close()
