"""Constants every process agrees on: sizes, limits, deadlines and gRPC channel options."""

from __future__ import annotations

import os

MiB = 1 << 20

# Layout defaults of the root directory.
DEFAULT_CHUNK_SIZE = 4 * MiB
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 64 * MiB


def is_power_of_two(n: int) -> bool:
    """Chunk sizes are powers of two, so an offset splits into chunk index and offset by shifts."""
    return n > 0 and not n & (n - 1)
DEFAULT_STRIPE_WIDTH = 4
DEFAULT_REPLICATION = 3
# A file's chunk index fits 31 bits on storage (chunk ids are validated there), and no file is
# bigger than this: a CloseWrite past either bound is refused as INVALID_ARGUMENT.
MAX_CHUNK_INDEX = (1 << 31) - 1
MAX_FILE_SIZE = 1 << 50  # 1 PiB

# Chunk data travels in gRPC stream messages of this size (256 KiB to 1 MiB; docs/architecture.md).
STREAM_MESSAGE_BYTES = 1 * MiB
# Largest gRPC message either end accepts; bigger ones are refused with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 8 * MiB

# Deadlines (seconds).
META_RPC_TIMEOUT = 10.0
STORAGE_RPC_TIMEOUT = 30.0
# Seconds a peer may go silent inside a data-port frame (after its first byte), or between the
# messages of a gRPC write stream, before the node drops it: a stalled client then holds a thread
# this long, not forever. Idle pooled connections between frames are not limited.
# The storage server's --stall-timeout sets it (default $CHAINFS_STALL_TIMEOUT, else 30 s).
STALL_TIMEOUT = float(os.environ.get("CHAINFS_STALL_TIMEOUT", "") or STORAGE_RPC_TIMEOUT)
# A data-port payload must also arrive whole within STALL_TIMEOUT + its size at this rate, so a
# peer trickling a byte per interval cannot keep a connection: 64 MiB may take 30 s + 256 s.
MIN_PAYLOAD_RATE = 256 << 10  # bytes per second
# HTTP/2 streams one gRPC connection may have open on a server at once (per make_server worker, x2):
# more wait on the client's side; one client cannot take every slot of maximum_concurrent_rpcs.
STREAMS_PER_WORKER = 2
# Connections (a thread each) one node's data service holds at once; the next are refused with
# BUSY, which clients retry. The storage server's --data-max-connections sets it (default
# $CHAINFS_DATA_MAX_CONNECTIONS, else 1024).
DATA_MAX_CONNECTIONS = int(os.environ.get("CHAINFS_DATA_MAX_CONNECTIONS", "") or 1024)
# Of those, one client may hold at most this many: a user token's holder (node tokens are not
# counted: storage nodes carry every client's forwards), or on a cluster without tokens the peer's
# host (every process of that host together).
# --data-max-per-client sets it (default $CHAINFS_DATA_MAX_PER_CLIENT, else 256).
DATA_MAX_PER_CLIENT = int(os.environ.get("CHAINFS_DATA_MAX_PER_CLIENT", "") or 256)

# Cluster manager.
HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TIMEOUT = 5.0
WRITE_SESSION_LEASE = 600.0
# How long the metaserver remembers a mutation's request id (and its answer) for a retry.
REQUEST_ID_TTL = 600.0
MAX_REQUEST_ID_BYTES = 128

# Batched metadata calls (StatMany, OpenWriteMany, CloseWriteMany): items per call. Paths are at
# most 4 KiB, so a full batch stays under MAX_MESSAGE_BYTES; clients split longer lists.
MAX_BATCH = 1024

# Listing pages.
DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 10000

DEFAULT_HOST = "127.0.0.1"

GRPC_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Server side: accept the clients' keepalive pings instead of answering GOAWAY too_many_pings.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10000),
    ("grpc.http2.max_ping_strikes", 0),
    # Client side: after a peer was away (a metaserver outage), reconnect within about a second of
    # its return. gRPC's default backoff (1 s, growing 1.6x up to 120 s) left storage nodes 21-37 s
    # behind a 90 s outage; attempts every <= 1 s cost nothing while the peer is down.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
