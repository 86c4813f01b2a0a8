"""gRPC face of the storage service: thin methods that delegate to `Replicator` and `ChunkReader`.

The `handler` wrapper (unary and streaming methods alike) turns a ChainfsError into its gRPC status
(with the machine-readable reason in the trailing metadata) and anything unexpected into INTERNAL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import grpc

from chainfs.common import auth, capabilities, config, stall
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.rpc import handler
from chainfs.proto import storage_pb2, storage_pb2_grpc
from chainfs.storageserver.chunk_ids import key_of
from chainfs.storageserver.reads import ChunkReader
from chainfs.storageserver.replication import Replicator

if TYPE_CHECKING:
    from chainfs.storageserver.repair import ChunkRepairer
    from chainfs.storageserver.resync import Resyncer
    from chainfs.storageserver.scrub import Scrubber


class StreamBody:
    """A Write stream's data messages, read as one run of bytes."""

    def __init__(self, requests: Iterator[storage_pb2.WriteRequest], length: int) -> None:
        self._requests = requests
        self._left = length
        self._piece = memoryview(b"")

    def read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            if not self._piece:
                self._piece = self._next(len(view) - got)
            n = min(len(self._piece), len(view) - got)
            view[got:got + n] = self._piece[:n]
            self._piece = self._piece[n:]
            got += n
            self._left -= n

    def _next(self, wanted: int) -> memoryview:
        msg = next(self._requests, None)
        if msg is None:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"the data ended {wanted} bytes early")
        if msg.WhichOneof("body") != "data":
            raise ChainfsError(Reason.INVALID_ARGUMENT, "only data messages follow the header")
        return memoryview(msg.data)

    def finish(self) -> None:
        if self._piece or next(self._requests, None) is not None:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "more data than the header announced")

    def discard(self) -> None:
        for _ in self._requests:
            pass


class StorageServicer(storage_pb2_grpc.StorageServicer):
    def __init__(self, replicator: Replicator, resyncer: "Resyncer | None" = None,
                 reader: ChunkReader | None = None, repairer: "ChunkRepairer | None" = None,
                 scrubber: "Scrubber | None" = None, stall_timeout: float | None = None) -> None:
        self.replicator = replicator
        # the longest wait for a Write stream's next message (--stall-timeout)
        self.stall_timeout = config.STALL_TIMEOUT if stall_timeout is None else stall_timeout
        self.repairer = repairer
        self.scrubber = scrubber
        self.reader = reader or ChunkReader(replicator.routing, replicator.stores, replicator.message_bytes)
        self.resyncer = resyncer

    @handler
    def Write(self, request_iterator: Iterator[storage_pb2.WriteRequest],
              context: grpc.ServicerContext) -> storage_pb2.WriteReply:
        request_iterator = stall.guard(request_iterator, context, self.stall_timeout)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("body") != "header":
            raise ChainfsError(Reason.INVALID_ARGUMENT, "a write stream starts with its header")
        ident = auth.identity_of(context)
        auth.check_forward(first.header, ident)
        capabilities.require(first.header.capability, first.header.chunk.inode, capabilities.WRITE, ident)
        body = StreamBody(request_iterator, first.header.length)
        return self.replicator.write(first.header, body, context.time_remaining())

    @handler
    def Read(self, request: storage_pb2.ReadRequest,
             context: grpc.ServicerContext) -> Iterator[storage_pb2.ReadReply]:
        capabilities.require_read(request.capabilities, (i.chunk.inode for i in request.items),
                                  auth.identity_of(context))
        yield from self.reader.read(request)

    @handler
    def ListChunks(self, request: storage_pb2.ChunkListRequest,
                   context: grpc.ServicerContext) -> storage_pb2.ChunkListReply:
        return self.reader.list_chunks(request)

    @handler
    def RemoveChunks(self, request: storage_pb2.RemoveChunksRequest,
                     context: grpc.ServicerContext) -> storage_pb2.RemoveChunksReply:
        capabilities.require(request.capability, request.inode, capabilities.REMOVE, auth.identity_of(context))
        return self.replicator.remove_chunks(request, context.time_remaining())

    @handler
    def Sync(self, request: storage_pb2.SyncRequest, context: grpc.ServicerContext) -> storage_pb2.SyncReply:
        if self.resyncer is None:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "this server does not take part in resync")
        return self.resyncer.handle_sync(request)


    @handler
    def RepairChunk(self, request: storage_pb2.RepairChunkRequest,
                    context: grpc.ServicerContext) -> storage_pb2.RepairChunkReply:
        if self.repairer is None:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "this server does not repair chunks")
        if not request.suspect:  # a repair from a good copy rewrites a replica: an operator's act
            auth.require_admin(auth.identity_of(context), "RepairChunk")
        key = key_of(request.chunk)
        pos = self.replicator.routing.position(request.chain_id)
        if pos is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"no target of chain {request.chain_id} on this node")
        if request.suspect:
            if self.scrubber is not None:
                self.scrubber.suspect(request.chain_id, pos.target_id, key)
            return storage_pb2.RepairChunkReply()
        return storage_pb2.RepairChunkReply(
            repaired=self.repairer.repair(request.chain_id, pos.target_id, key, "rpc"))


def add_to_server(servicer: StorageServicer, server: grpc.Server) -> None:
    storage_pb2_grpc.add_StorageServicer_to_server(servicer, server)
