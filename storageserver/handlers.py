"""gRPC face of the storage service: thin methods that delegate to `Replicator`.

The `handler`/`stream_handler` wrappers turn a ChainfsError into its gRPC status (with the
machine-readable reason in the trailing metadata) and anything unexpected into INTERNAL.
"""

from __future__ import annotations

from typing import Iterator

import grpc

from chainfs.common.rpc import handler, stream_handler
from chainfs.proto import storage_pb2, storage_pb2_grpc
from chainfs.storageserver.replication import Replicator


class StorageServicer(storage_pb2_grpc.StorageServicer):
    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

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


def add_to_server(servicer: StorageServicer, server: grpc.Server) -> None:
    storage_pb2_grpc.add_StorageServicer_to_server(servicer, server)
