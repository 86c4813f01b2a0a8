"""gRPC face of the storage service: thin methods that delegate to `Replicator`.

The `handler`/`stream_handler` wrappers turn a ChainfsError into its gRPC status (with the
machine-readable reason in the trailing metadata) and anything unexpected into INTERNAL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import grpc

from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.rpc import handler, stream_handler
from chainfs.proto import storage_pb2, storage_pb2_grpc
from chainfs.storageserver.replication import Replicator

if TYPE_CHECKING:
    from chainfs.storageserver.resync import Resyncer


class StorageServicer(storage_pb2_grpc.StorageServicer):
    def __init__(self, replicator: Replicator, resyncer: "Resyncer | None" = None) -> None:
        self.replicator = replicator
        self.resyncer = resyncer

    @handler
    def Write(self, request_iterator: Iterator[storage_pb2.WriteRequest],
              context: grpc.ServicerContext) -> storage_pb2.WriteReply:
        return self.replicator.write(request_iterator, context.time_remaining())

    @stream_handler
    def Read(self, request: storage_pb2.ReadRequest,
             context: grpc.ServicerContext) -> Iterator[storage_pb2.ReadReply]:
        yield from self.replicator.read(request)

    @handler
    def ListChunks(self, request: storage_pb2.ChunkListRequest,
                   context: grpc.ServicerContext) -> storage_pb2.ChunkListReply:
        return self.replicator.list_chunks(request)

    @handler
    def RemoveChunks(self, request: storage_pb2.RemoveChunksRequest,
                     context: grpc.ServicerContext) -> storage_pb2.RemoveChunksReply:
        return self.replicator.remove_chunks(request, context.time_remaining())

    @handler
    def Sync(self, request: storage_pb2.SyncRequest, context: grpc.ServicerContext) -> storage_pb2.SyncReply:
        if self.resyncer is None:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "this server does not take part in resync")
        return self.resyncer.handle_sync(request)


def add_to_server(servicer: StorageServicer, server: grpc.Server) -> None:
    storage_pb2_grpc.add_StorageServicer_to_server(servicer, server)
