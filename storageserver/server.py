"""A storage node process: targets (ChunkStores), the Storage gRPC service, registration, heartbeats.

`StorageNode` has the servers' one shape (`common/serving.py`): construction opens the targets and
binds nothing; `start()` binds and serves; `stop()` closes all. Start-up order matters: the gRPC
server and the data service are bound and started first (peers forward writes to us as soon as the
manager puts us into chains), then the node registers with its bound addresses, then heartbeats
start, and only then does `run_server` write the port file, so whoever waits for the port file
finds a registered, serving node. SIGTERM stops heartbeats, the server and the RocksDBs in that order.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chainfs.common import config
from chainfs.common.metrics import MetricsEndpoint, server_registry, start_endpoint
from chainfs.common import auth, serving, tls
from chainfs.common.rpc import ChannelPool, bind, make_server
from chainfs.common.dataconn import DataConnections, local_host_id
from chainfs.proto import meta_pb2 as mpb
from chainfs.storageserver.chunk_store import ChunkStore
from chainfs.storageserver.data_server import DataServer
from chainfs.storageserver.locks import KeyedLocks
from chainfs.storageserver.reads import ChunkReader
from chainfs.storageserver.handlers import StorageServicer, add_to_server
from chainfs.storageserver.metrics import NodeCollector
from chainfs.storageserver.repair import ChunkRepairer
from chainfs.storageserver.replication import Replicator
from chainfs.storageserver.resync import Resyncer
from chainfs.storageserver.scrub import DEFAULT_INTERVAL, DEFAULT_MIB_S, Scrubber
from chainfs.storageserver.routing import ClusterRouting

log = logging.getLogger(__name__)

SERVICE_NAME = "chainfs.Storage"
RPC_WORKERS = 64


class StorageNode:
    """Everything one storage server process runs; usable in-process as well."""

    def __init__(self, data_dir: str | os.PathLike[str], meta_address: str, *, host: str = config.DEFAULT_HOST,
                 port: int = 0, targets: int = 4, advertise_host: str | None = None, fsync: bool = True,
                 self_fence: bool = True, rejoin_wait: bool = True, metrics_port: int = -1,
                 data_port: int = 0, scrub_mib_s: float = DEFAULT_MIB_S,
                 scrub_interval: float = DEFAULT_INTERVAL, stall_timeout: float | None = None,
                 data_max_connections: int | None = None, data_max_per_client: int | None = None) -> None:
        if targets < 1:
            raise ValueError("a storage node needs at least one target")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        paths = [self.data_dir / f"target-{k}" for k in range(targets)]
        self._local_stores: list[ChunkStore] = []
        try:
            for path in paths:
                self._local_stores.append(ChunkStore(path, fsync=fsync))
        except BaseException:
            for store in self._local_stores:
                store.close()
            raise
        self.stores: dict[int, ChunkStore] = {}  # filled with target ids once registered
        self.channels = ChannelPool()
        self.server = make_server(RPC_WORKERS)
        self.host, self.requested_port, self.metrics_port = host, port, metrics_port
        if advertise_host is None:
            advertise_host = host if host not in ("0.0.0.0", "::", "[::]", "") else config.DEFAULT_HOST
        self.advertise_host = advertise_host
        self.port = 0
        # The address is known once start() has bound the port; registration comes after that.
        self.routing = ClusterRouting(meta_address, self.data_dir, "", [str(p) for p in paths],
                                      self.channels, self_fence=self_fence)
        self.routing.on_registered(self._map_targets)
        self.locks = KeyedLocks()
        self.connections = DataConnections()
        self.replicator = Replicator(self.routing, self.stores, self.channels,
                                     max_client_updates=max(1, RPC_WORKERS // 3), locks=self.locks,
                                     connections=self.connections)
        self.repairer = ChunkRepairer(self.routing, self.stores, self.channels, self.locks)
        self.replicator.repairer = self.repairer
        self.scrubber = Scrubber(self.routing, self.stores, self.repairer, scrub_mib_s, scrub_interval)
        self.reader = ChunkReader(self.routing, self.stores, on_corrupt=self.scrubber.suspect)
        self.resyncer = Resyncer(self.routing, self.replicator, self.stores, self.channels, locks=self.locks,
                                 repairer=self.repairer)
        self.routing.local_state = self.resyncer.local_state
        stall_timeout = config.STALL_TIMEOUT if stall_timeout is None else stall_timeout
        add_to_server(StorageServicer(self.replicator, self.resyncer, self.reader, self.repairer,
                                      self.scrubber, stall_timeout), self.server)
        self.data = DataServer(self.replicator, self.reader, host, data_port, self.data_dir / "data.sock",
                               stall_timeout=stall_timeout, max_connections=data_max_connections,
                               max_per_client=data_max_per_client)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.rejoin_wait = rejoin_wait
        self.registry = server_registry(NodeCollector(self.stores, self.routing, self.resyncer))
        self.metrics: MetricsEndpoint | None = None
        self._stopped = False

    @property
    def address(self) -> str:
        """host:port peers and clients reach this node's gRPC service at (once started)."""
        return f"{self.advertise_host}:{self.port}"

    def start(self, stop: threading.Event | None = None, register_timeout: float | None = None) -> int:
        """Binds and serves, registers (retrying until the manager answers, or until `stop` is set)
        and starts heartbeats. Returns the bound gRPC port."""
        self.port = bind(self.server, self.host, self.requested_port)
        self.data.start()
        self.routing.address = self.address
        self.routing.endpoint = mpb.NodeInfo(data_address=f"{self.advertise_host}:{self.data.port}",
                                             host_id=local_host_id(), local_socket=self.data.local_socket)
        self.metrics = start_endpoint(self.registry, self.host, self.metrics_port)
        if self.metrics is not None:
            self.routing.metrics_address = f"{self.advertise_host}:{self.metrics.port}"
        self.server.start()
        log.info("storage service listening at %s (data at %s)", self.address, self.routing.endpoint.data_address)
        self.routing.register(stop, register_timeout)
        # A restart: no heartbeats until the manager has marked our targets offline (3FS), so each
        # one comes back through waiting -> syncing -> serving.
        if self.rejoin_wait:
            self.routing.wait_until_offline(stop)
        try:
            self.routing.heartbeat()  # the first lease, so we serve as soon as the port is published
        except grpc.RpcError as err:
            log.warning("first heartbeat failed: %s", err.code())
        self.routing.start_heartbeats()
        self.resyncer.start()
        self.scrubber.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("storage node %d serving at %s (targets %s)", self.routing.node_id, self.address,
                 self.routing.target_ids)
        return self.port

    def _map_targets(self, target_ids: list[int]) -> None:
        mapping = dict(zip(target_ids, self._local_stores))
        for stale in set(self.stores) - set(mapping):
            del self.stores[stale]
        self.stores.update(mapping)

    def stop(self, grace: float = 2.0) -> None:
        """Stops heartbeats, background work and serving, then closes the targets."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.routing.stop()
        self.scrubber.stop()
        self.resyncer.stop()
        self.data.stop()
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self.connections.close()
        self.channels.close()
        for store in self._local_stores:
            store.close()
        log.info("storage node %d stopped", self.routing.node_id)

    def __enter__(self) -> StorageNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The storage server's options; pass a (sub)parser to add them to it."""
    if parser is None:
        parser = argparse.ArgumentParser(prog="python -m chainfs.storageserver",
                                         description="Run a chainfs storage server.")
    parser.add_argument("--data-dir", required=True, help="directory holding target-<k> data dirs")
    parser.add_argument("--meta", required=True, metavar="HOST:PORT", help="metaserver address")
    serving.add_listen_args(parser, published="once registered")
    parser.add_argument("--data-port", type=int, default=0,
                        help="port of the lean TCP data service (0 picks a free one)")
    parser.add_argument("--targets", type=int, default=4, help="number of targets (data dirs)")
    parser.add_argument("--advertise-host", help="host peers use to reach this node (default: --host)")
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync (tests and benchmarks only)")
    parser.add_argument("--no-rejoin-wait", action="store_true",
                        help="after a restart, heartbeat at once instead of waiting to be marked offline "
                             "(only for managers without failure detection)")
    parser.add_argument("--scrub-mib-s", type=_non_negative, default=DEFAULT_MIB_S,
                        help="MiB per second the background scrub reads and verifies (0 turns it off)")
    parser.add_argument("--scrub-interval", type=_non_negative, default=DEFAULT_INTERVAL,
                        help="seconds between the starts of scrub passes over every chunk")
    limits = parser.add_argument_group("limits (docs/security.md, \"Tenants and limits\")")
    limits.add_argument("--stall-timeout", type=_positive, default=config.STALL_TIMEOUT, metavar="SECONDS",
                        help="drop a peer silent this long inside a data-port frame or between the "
                             "messages of a Write stream (default $CHAINFS_STALL_TIMEOUT, else %(default)s)")
    limits.add_argument("--data-max-connections", type=_positive_int, default=config.DATA_MAX_CONNECTIONS,
                        metavar="N", help="data-port connections (a thread each) served at once; the next "
                                          "get BUSY (default $CHAINFS_DATA_MAX_CONNECTIONS, else %(default)s)")
    limits.add_argument("--data-max-per-client", type=_positive_int, default=config.DATA_MAX_PER_CLIENT,
                        metavar="N", help="of those, the most one client holds: per user token, or per peer "
                                          "host without tokens; storage nodes are not counted "
                                          "(default $CHAINFS_DATA_MAX_PER_CLIENT, else %(default)s)")
    serving.add_process_args(parser)
    return parser


def run_server(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Runs a storage server until SIGTERM/SIGINT; returns the process exit status."""
    if args is None:
        args = build_parser().parse_args(argv)
    serving.setup_logging(args, "storage")
    try:
        tls.configure_from_args(args)
        # Without --token-file, a node names itself by its data directory (one node per directory).
        auth.configure_from_args(args, f"storage:{os.path.realpath(args.data_dir)}")
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    node = StorageNode(args.data_dir, args.meta, host=args.host, port=args.port, targets=args.targets,
                       advertise_host=args.advertise_host, fsync=not args.no_fsync,
                       rejoin_wait=not args.no_rejoin_wait, metrics_port=args.metrics_port,
                       data_port=args.data_port, scrub_mib_s=args.scrub_mib_s,
                       scrub_interval=args.scrub_interval, stall_timeout=args.stall_timeout,
                       data_max_connections=args.data_max_connections,
                       data_max_per_client=args.data_max_per_client)
    return serving.run(node, args)
