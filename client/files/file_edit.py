"""Editing a file's chunks in place: ranges patched at any offset, the length cut or grown.

Why this exists beside write sessions: a POSIX mount must let SQLite, rsync and editors change bytes
in the middle of a file and set its length, while a plain chainfs write makes a whole new file. The
storage layer already applies a partial chunk update copy-on-write along the chain (the head
patches the committed chunk and forwards the whole new content), so an edit is a list of partial
chunk writes into the file's own inode, done under an APPEND session (the metaserver then knows a
writer holds the inode, and publishes the new length at close). A cut keeps the invariant the
metaserver and fsck check: the chunk holding the last byte ends exactly at the length, and no chunk
lies past it.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

import grpc

from chainfs.common import capabilities
from chainfs.common.errors import to_exception
from chainfs.common.retry import call_with_retry
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

from chainfs.client.files.chainclient import ChainClient
from chainfs.client.rpc.meta_client import CHANNELS
from chainfs.client.rpc.placement import chain_of, chunk_ranges
from chainfs.client.rpc.pools import EXECUTOR
from chainfs.client.rpc.storage_client import head_of

log = logging.getLogger(__name__)


def submit_range(client: ChainClient, inode: mpb.Inode, offset: int, data: bytes | memoryview) -> list[Future]:
    """Starts the chunk writes that put `data` at `offset` of the inode (each chunk's part is one
    partial update; a whole chunk replaces it)."""
    cs = inode.layout.chunk_size
    view = memoryview(data)
    futures = []
    for r in chunk_ranges(offset, len(view), cs):
        piece = view[r.file_offset - offset:r.file_offset - offset + r.length]
        whole = r.offset == 0 and r.length == cs
        futures.append(EXECUTOR.get().submit(client.storage.write_chunk, chain_of(inode.layout, r.index),
                                             inode.id, r.index, piece, cs, r.offset, whole))
    return futures


def remove_chunks_from(client: ChainClient, inode: mpb.Inode, from_index: int) -> None:
    """Deletes the inode's chunks with index >= from_index on every chain of its stripe (each
    head removes and forwards along its chain, as the garbage collector's removals do)."""
    for chain_id in dict.fromkeys(inode.layout.chains):

        def remove(chain_id: int = chain_id) -> None:
            chain = client.routing.chain(chain_id)
            head = head_of(chain)
            request = spb.RemoveChunksRequest(chain_id=chain_id, chain_version=chain.version, inode=inode.id,
                                              from_index=from_index, request_id=client.storage.request_id(),
                                              capability=client.storage.capability(inode.id, capabilities.REMOVE))
            stub = spb_grpc.StorageStub(CHANNELS.get(client.routing.node_address(head.node_id), client.routing.token))
            stub.RemoveChunks(request, timeout=client.storage.timeout)

        try:
            call_with_retry(remove, client.storage.retry_deadline, before_retry=client.routing.refresh,
                            what=f"removal of chunks on chain {chain_id}",
                            retryable=client.storage.renewing(inode.id, capabilities.REMOVE))
        except grpc.RpcError as exc:  # the built-in exception of the error table
            raise to_exception(exc, f"chunks of inode {inode.id} from {from_index}") from None


def cut(client: ChainClient, path: str, inode: mpb.Inode, length: int) -> mpb.Inode:
    """Shrinks a committed file to `length` keeping its inode (and so its owner, mode and handles):
    the boundary chunk is rewritten to end at `length`, later chunks are deleted, then the length
    is published. The chunk work runs under an APPEND session on the inode, abandoned afterwards
    (it changes no length): the session is what the capabilities to write and remove its chunks
    come with, and it keeps appenders out meanwhile."""
    if length >= inode.length:
        raise ValueError(f"cut to {length} does not shrink a file of {inode.length} bytes: {path}")
    session = client.open_writer(path, mpb.APPEND, parents=False).session
    try:
        if session.inode.id != inode.id:
            raise FileNotFoundError(2, "file was replaced during the cut", path)
        cs = inode.layout.chunk_size
        if length:
            index = (length - 1) // cs
            start = index * cs
            head = client.read_ranges([(inode, start, length)])[0]
            client.storage.write_chunk(chain_of(inode.layout, index), inode.id, index, head, cs, 0, True)
            remove_chunks_from(client, inode, index + 1)
        else:
            remove_chunks_from(client, inode, 0)
    finally:
        client.meta.close_write(session.session_id, session.inode.length, commit=False, path=path)
    return client.meta.set_attr(path, length=length)
