"""The metaserver process: store + namespace + cluster manager behind one gRPC server.

Backends: `rocksdb` (one metaserver over its own directory) or `etcd` (any number of stateless
metaservers over one etcd cluster; each serves the namespace, and the one elected by an etcd lease
runs the cluster manager and GC while the others stand by, see `election.py`).

`MetaServer` has the servers' one shape (`common/serving.py`): construction opens the store and
binds nothing, `start()` binds and serves, `stop()` closes all. It runs in-process (tests, tools) or
through `run_server` (the module CLI and `chainfs meta serve`), which publishes the bound port in
--port-file only once the server serves.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from typing import Sequence

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chainfs.common.background import LoopThread
from chainfs.common import config
from chainfs.common.errors import ChainfsError
from chainfs.common.metrics import MetricsEndpoint, server_registry, start_endpoint
from chainfs.common import auth, capabilities, serving, tls
from chainfs.common.rpc import bind, make_server
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.metaserver.election import ManagerElection
from chainfs.metaserver.etcd_store import EtcdStore
from chainfs.metaserver.extent_check import ChunkExtentCheck
from chainfs.metaserver.gc import DEFAULT_GC_GRACE, DEFAULT_GC_INTERVAL, DEFAULT_GC_RATE, GarbageCollector
from chainfs.metaserver.handlers import ClusterManagerServicer, NamespaceServicer
from chainfs.metaserver.metrics import ClusterCollector
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.store import MetaStore, Store
from chainfs.proto import meta_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = ("chainfs.Namespace", "chainfs.ClusterManager")
DEFAULT_SWEEP_INTERVAL = 10.0
BACKENDS = ("rocksdb", "etcd")


def split_endpoints(text: str | Sequence[str] | None) -> list[str]:
    """'h1:p1,h2:p2' (or a list) -> ['h1:p1', 'h2:p2']."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    return [i.strip() for i in items if i.strip()]


def open_store(backend: str, data_dir: str | os.PathLike[str] | None, etcd: str | Sequence[str] | None = None,
               etcd_prefix: str = "/chainfs") -> Store:
    """The metadata store of one backend; ValueError naming what is missing."""
    if backend == "rocksdb":
        if not data_dir:
            raise ValueError("the rocksdb backend needs --data-dir")
        return MetaStore(data_dir)
    if backend == "etcd":
        endpoints = split_endpoints(etcd)
        if not endpoints:
            raise ValueError("the etcd backend needs --etcd HOST:PORT[,HOST:PORT...]")
        return EtcdStore(endpoints, prefix=etcd_prefix)
    raise ValueError(f"unknown metadata backend {backend!r} (expected one of {', '.join(BACKENDS)})")


def default_manager_lease(heartbeat_timeout: float) -> int:
    """The manager's lease (whole seconds, as etcd counts): half a heartbeat timeout, at least 1 s,
    so that a new manager is elected before storage nodes give up on the old one for long."""
    return max(1, int(heartbeat_timeout / 2))


class MetaServer:
    """Opens the store at construction; `start()` serves and returns the port; `stop()` closes all."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None,
        host: str = config.DEFAULT_HOST,
        port: int = 0,
        replication: int = config.DEFAULT_REPLICATION,
        heartbeat_timeout: float = config.HEARTBEAT_TIMEOUT,
        session_lease: float = config.WRITE_SESSION_LEASE,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        max_workers: int = 64,
        min_nodes: int = 0,
        gc_interval: float = DEFAULT_GC_INTERVAL,
        gc_rate: float = DEFAULT_GC_RATE,
        gc_grace: float = DEFAULT_GC_GRACE,
        meta_backend: str = "rocksdb",
        etcd: str | Sequence[str] | None = None,
        etcd_prefix: str = "/chainfs",
        manager_lease: int | None = None,
        metrics_port: int = -1,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.metrics_port = metrics_port
        self.metrics: MetricsEndpoint | None = None
        self.port = 0
        self.sweep_interval = max(0.05, sweep_interval)
        self.store = open_store(meta_backend, data_dir, etcd, etcd_prefix)
        self.election: ManagerElection | None = None
        self.manager_lease = manager_lease or default_manager_lease(heartbeat_timeout)
        try:
            self.cluster = ClusterManager(self.store, replication=replication, heartbeat_timeout=heartbeat_timeout,
                                          min_nodes=min_nodes)
            if self.store.backend == "etcd":
                self.cluster.active = False  # a standby until elected
            self.extent_check = ChunkExtentCheck(self.cluster)
            self.namespace = Namespace(self.store, self.cluster, replication=replication, lease_s=session_lease,
                                       extent_check=self.extent_check)
        except BaseException:
            self.store.close()
            raise
        self.grpc_server = make_server(max_workers=max_workers)
        pb_grpc.add_NamespaceServicer_to_server(NamespaceServicer(self.namespace), self.grpc_server)
        pb_grpc.add_ClusterManagerServicer_to_server(ClusterManagerServicer(self.cluster), self.grpc_server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        self.gc = GarbageCollector(self.namespace, self.cluster, interval=gc_interval,
                                   session_interval=self.sweep_interval, rate=gc_rate, grace=gc_grace)
        # The state table runs a few times per heartbeat timeout, so a silent node is noticed soon
        # after T and a finished resync turns into SERVING promptly.
        self.monitor_interval = min(0.2, max(0.02, heartbeat_timeout / 10))
        self._monitor = LoopThread("chain-monitor", self._monitor_loop, join_timeout=10)
        self._stop = self._monitor.stopping
        self._stopped = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, stop: threading.Event | None = None) -> int:
        """Binds, serves and returns the port (nothing here waits, so `stop` is not needed)."""
        self.port = bind(self.grpc_server, self.host, self.requested_port)
        self.cluster.start_grace()
        self.grpc_server.start()
        self.metrics = start_endpoint(server_registry(ClusterCollector(self.cluster, self.namespace)),
                                      self.host, self.metrics_port)
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._monitor.start()
        self.gc.start()
        if isinstance(self.store, EtcdStore):
            self.election = ManagerElection(self.store, self.address, self.manager_lease,
                                            on_elected=self.cluster.activate, on_deposed=self.cluster.deactivate)
            self.election.start()
        log.info("metaserver serving on %s (data %s)", self.address, self.store.path)
        return self.port

    def _monitor_loop(self) -> None:
        last_failure = ""
        while not self._stop.wait(self.monitor_interval):
            try:
                if self.cluster.active:
                    self.cluster.check_chains()
                else:
                    self.cluster.follow()
                last_failure = ""
            except ChainfsError as exc:
                if exc.message != last_failure:  # once per outage, not five times a second
                    log.warning("checking chains: %s", exc.message)
                last_failure = exc.message
            except Exception:  # noqa: BLE001 - keep watching; the next pass may succeed
                log.exception("checking chains failed")

    def stop(self, grace: float | None = 2.0) -> None:
        """Stops serving, waits for in-flight calls (up to `grace`), then closes the store."""
        if self._stopped:
            return
        self._stopped = True
        if self.election is not None:
            self.election.stop()  # hands the manager's role over at once
            self.cluster.deactivate()
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self._monitor.stop()
        self.gc.stop()
        self.extent_check.close()
        self.store.close()
        log.info("metaserver stopped")

    def __enter__(self) -> MetaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The metaserver's flags; pass a (sub)parser to add them to it (`chainfs meta serve`)."""
    p = parser or argparse.ArgumentParser(prog="python -m chainfs.metaserver", description="chainfs metaserver")
    p.add_argument("--meta-backend", choices=BACKENDS, default="rocksdb",
                   help="rocksdb: one metaserver over --data-dir; etcd: several metaservers over --etcd")
    p.add_argument("--data-dir", default=None, help="RocksDB directory (created if missing; rocksdb backend)")
    p.add_argument("--etcd", default=None, help="etcd endpoints HOST:PORT[,HOST:PORT...] (etcd backend)")
    p.add_argument("--etcd-prefix", default="/chainfs", help="key prefix of this cluster in etcd")
    p.add_argument("--manager-lease", type=int, default=None,
                   help="seconds of the cluster manager's etcd lease (default: half the heartbeat timeout)")
    serving.add_listen_args(p)
    p.add_argument("--replication", type=int, default=config.DEFAULT_REPLICATION, help="targets per chain")
    p.add_argument("--min-nodes", type=int, default=0,
                   help="form chains only once this many storage nodes are alive (default: replication)")
    p.add_argument("--heartbeat-timeout", type=float, default=config.HEARTBEAT_TIMEOUT, help="seconds")
    p.add_argument("--session-lease", type=float, default=config.WRITE_SESSION_LEASE, help="seconds")
    p.add_argument("--sweep-interval", type=float, default=DEFAULT_SWEEP_INTERVAL,
                   help="seconds between sweeps of expired write sessions")
    p.add_argument("--gc-interval", type=float, default=DEFAULT_GC_INTERVAL,
                   help="seconds between garbage collection passes")
    p.add_argument("--gc-grace", type=float, default=DEFAULT_GC_GRACE,
                   help="seconds a removed file's chunks are kept for readers that still hold it")
    p.add_argument("--gc-rate", type=float, default=DEFAULT_GC_RATE,
                   help="at most this many chunk removal calls per second")
    serving.add_process_args(p)
    capabilities.add_server_args(p)
    return p


def server_from_args(args: argparse.Namespace) -> MetaServer:
    return MetaServer(
        args.data_dir,
        meta_backend=args.meta_backend,
        etcd=args.etcd,
        etcd_prefix=args.etcd_prefix,
        manager_lease=args.manager_lease,
        host=args.host,
        port=args.port,
        replication=args.replication,
        heartbeat_timeout=args.heartbeat_timeout,
        session_lease=args.session_lease,
        sweep_interval=args.sweep_interval,
        min_nodes=args.min_nodes,
        gc_interval=args.gc_interval,
        gc_rate=args.gc_rate,
        gc_grace=args.gc_grace,
        metrics_port=args.metrics_port,
    )


def run_server(args_list: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Runs a metaserver until SIGTERM/SIGINT (main thread only). Returns the exit status."""
    if args is None:
        args = build_parser().parse_args(args_list)
    serving.setup_logging(args)
    if args.replication < 1:
        log.error("--replication must be >= 1")
        return 2
    try:
        tls.configure_from_args(args)
        auth.configure_from_args(args, "meta")
        capabilities.set_ttl(args.capability_ttl)
        server = server_from_args(args)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    return serving.run(server, args)
