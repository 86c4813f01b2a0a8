"""A local multi-process cluster: metaserver(s) and N storage servers on loopback.

`chainfs cluster up/down/status/restart-node` and the tests use it. State lives under one
directory: `cluster.json` (addresses, ports, metrics ports and current pids; `state.py`), `pids` (every server
process ever started here, one `pid module port-file` line each, so `down` stops restarted ones
too), `logs/`, `meta/`, `storage-<i>/`, with the etcd backend `etcd/` (the etcd members), and with
`tls=True` `tls/` (the CA and every process's certificate, `certs.py`), and `auth/` (the cluster
secret, mode 0600, and the tokens of its nodes and of its root user, `auth_files.py`).
With `meta_backend="etcd"` any number of metaservers share one etcd cluster (`metaservers=`,
`etcd_members=`); `address` lists them all ("h:p1,h:p2,..."); see `ha.py` for those parts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from dataclasses import asdict
from pathlib import Path

from chainfs.common.config import DEFAULT_HOST
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.rpc.meta_client import MetaClient
from chainfs.cluster import auth_files, certs
from chainfs.cluster.etcd import EtcdCluster
from chainfs.cluster.ha import HaMixin
from chainfs.cluster.limits import DataLimits
from chainfs.cluster.netns import NetnsLab
from chainfs.cluster.process import is_alive, is_ours, read_port, spawn, stop_pid, wait_for
from chainfs.cluster.state import META_MODULE, STATE_FILE, STORAGE_MODULE, ClusterState, ServerState, servers_of

log = logging.getLogger(__name__)

PID_LOG = "pids"


class LocalCluster(HaMixin):
    """Starts, inspects, faults and stops a local cluster; a context manager for tests."""

    def __init__(self, root: str | os.PathLike[str], storage_nodes: int = 3, replicas: int = 3,
                 targets_per_node: int = 4, port: int = 0, host: str = DEFAULT_HOST,
                 heartbeat_timeout: float = 5.0, start_timeout: float = 60.0, gc_interval: float = 2.0,
                 gc_grace: float = 30.0, fsync: bool = True, meta_backend: str = "rocksdb",
                 metaservers: int = 1, etcd_members: int = 1, netns: bool = False,
                 scrub_mib_s: float = 16.0, scrub_interval: float = 600.0, tls: bool = False,
                 auth: bool = True, limits: DataLimits | None = None,
                 capability_ttl: float | None = None) -> None:
        if storage_nodes < 1:
            raise ValueError(f"storage_nodes must be >= 1, got {storage_nodes}")
        if not 1 <= replicas <= storage_nodes:
            raise ValueError(f"replicas must be between 1 and storage_nodes ({storage_nodes}), got {replicas}")
        if targets_per_node < 1:
            raise ValueError(f"targets_per_node must be >= 1, got {targets_per_node}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        if meta_backend not in ("rocksdb", "etcd"):
            raise ValueError(f"meta_backend must be 'rocksdb' or 'etcd', got {meta_backend!r}")
        if metaservers < 1 or (metaservers > 1 and meta_backend != "etcd"):
            raise ValueError(f"metaservers must be 1 with rocksdb (several need meta_backend='etcd'), got {metaservers}")
        if etcd_members < 1:
            raise ValueError(f"etcd_members must be >= 1, got {etcd_members}")
        if scrub_mib_s < 0 or scrub_interval < 0:
            raise ValueError(f"scrub_mib_s and scrub_interval must be >= 0, got {scrub_mib_s}, {scrub_interval}")
        self.root = Path(root).resolve()
        self.start_timeout = start_timeout
        self.fsync = fsync  # False only where durability is not under test (it costs 3 fsyncs per hop)
        self._procs: dict[str, subprocess.Popen] = {}
        self.etcd_members = etcd_members
        self.etcd: EtcdCluster | None = None
        self.netns = netns
        self.lab: NetnsLab | None = None
        self.state = ClusterState(
            host=host, replicas=replicas, targets_per_node=targets_per_node,
            heartbeat_timeout=heartbeat_timeout, gc_interval=gc_interval, gc_grace=gc_grace,
            meta_backend=meta_backend, scrub_mib_s=scrub_mib_s, scrub_interval=scrub_interval, tls=tls, auth=auth,
            limits=limits or DataLimits(), capability_ttl=capability_ttl,
            metas=[ServerState(port=port if i == 0 else 0, data_dir=str(self.root / ("meta" if i == 0 else f"meta-{i}")),
                               log=str(self.root / "logs" / ("meta.log" if i == 0 else f"meta-{i}.log")))
                   for i in range(metaservers)],
            storage=[ServerState(data_dir=str(self.root / f"storage-{i}"),
                                 log=str(self.root / "logs" / f"storage-{i}.log")) for i in range(storage_nodes)],
        )

    # ---- addresses ----

    @property
    def address(self) -> str:
        return self.state.address

    @property
    def tls_dir(self) -> Path | None:
        """The CA and the clients' certificate (`TlsConfig.from_dir`), when the cluster uses TLS."""
        return self.root / certs.TLS_DIR if self.state.tls else None

    @property
    def root_token(self) -> str | None:
        """The token of this cluster's root user (what its clients find in the credentials file)."""
        return auth_files.root_token(self.root) if self.state.auth else None

    def _meta_addresses(self) -> list[str]:
        return [a for a in self.address.split(",") if not a.endswith(":0")]

    @property
    def url(self) -> str:
        return f"chainfs://{self.address}"

    @property
    def storage_nodes(self) -> int:
        return len(self.state.storage)

    def expected_chains(self) -> int:
        return (self.storage_nodes * self.state.targets_per_node) // self.state.replicas

    # ---- lifecycle ----

    def start(self) -> "LocalCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / STATE_FILE).exists():
            old = ClusterState.from_json(json.loads((self.root / STATE_FILE).read_text()))
            if any(_running(s, m) for s, m in servers_of(old)):
                raise FileExistsError(17, "a cluster is already running in this directory "
                                          "(`cluster up` on it starts what is missing)", str(self.root))
        try:
            etcd_wrap = None
            etcd_hosts = None
            if self.netns:
                etcd_wrap, etcd_hosts = self._make_lab()
            if self.state.meta_backend == "etcd":
                self.etcd = EtcdCluster(self.root / "etcd", members=self.etcd_members, hosts=etcd_hosts,
                                        wrap=etcd_wrap).start()
                self.state.etcd = [asdict(m) for m in self.etcd.members]
            if self.state.auth:
                auth_files.ensure(self.root)
            for i in range(len(self.state.metas)):
                self._start_meta(i)
            if self.state.tls:
                certs.publish(self.root, self._meta_addresses())
            if self.state.auth:
                auth_files.publish(self.root, self._meta_addresses())
            for i in range(self.storage_nodes):
                self._start_storage(i)
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _meta_name(self, i: int) -> str:
        return "meta" if i == 0 else f"meta-{i}"

    def _start_meta(self, i: int = 0) -> None:
        meta = self.state.metas[i]
        port_file = self.root / f"{self._meta_name(i)}.port"
        port_file.unlink(missing_ok=True)
        metrics_file = self._metrics_file(self._meta_name(i))
        args = ["--host", self.state.host_of(meta), "--port", str(meta.port), "--port-file", str(port_file),
                "--metrics-port", str(meta.metrics_port), "--metrics-port-file", str(metrics_file),
                "--replication", str(self.state.replicas),
                "--min-nodes", str(self.storage_nodes),
                "--heartbeat-timeout", str(self.state.heartbeat_timeout),
                "--gc-interval", str(self.state.gc_interval), "--gc-grace", str(self.state.gc_grace)]
        if self.state.tls:
            args += certs.server_args(self.root, self._meta_name(i), self.state.host_of(meta))
        args += auth_files.server_args(self.root, self._meta_name(i)) if self.state.auth else ["--insecure"]
        if self.state.capability_ttl is not None:
            args += ["--capability-ttl", str(self.state.capability_ttl)]
        if self.state.meta_backend == "etcd":
            args += ["--meta-backend", "etcd", "--etcd", ",".join(self._etcd().endpoints),
                     "--etcd-prefix", self.state.etcd_prefix]
        else:
            args += ["--data-dir", meta.data_dir]
        proc = self._spawn(META_MODULE, args, meta, port_file)
        self._procs[self._meta_name(i)] = proc
        meta.pid = proc.pid
        meta.port = self._await_port(proc, port_file, f"metaserver {i}", meta.log)
        meta.metrics_port = read_port(metrics_file) or 0
        self._save()

    def _start_storage(self, i: int) -> None:
        node = self.state.storage[i]
        port_file = self.root / f"storage-{i}.port"
        port_file.unlink(missing_ok=True)
        metrics_file = self._metrics_file(f"storage-{i}")
        args = ["--data-dir", node.data_dir, "--meta", self.address, "--host", self.state.host_of(node),
                "--port", str(node.port), "--port-file", str(port_file),
                "--metrics-port", str(node.metrics_port), "--metrics-port-file", str(metrics_file),
                "--targets", str(self.state.targets_per_node),
                "--scrub-mib-s", str(self.state.scrub_mib_s), "--scrub-interval", str(self.state.scrub_interval)]
        if not self.fsync:
            args.append("--no-fsync")
        args += self.state.limits.server_args()
        if self.state.tls:
            args += certs.server_args(self.root, f"storage-{i}", self.state.host_of(node))
        args += auth_files.server_args(self.root, f"storage-{i}") if self.state.auth else ["--insecure"]
        proc = self._spawn(STORAGE_MODULE, args, node, port_file)
        self._procs[f"storage-{i}"] = proc
        node.pid = proc.pid
        node.port = self._await_port(proc, port_file, f"storage server {i}", node.log)
        node.metrics_port = read_port(metrics_file) or 0
        self._save()

    def _metrics_file(self, name: str) -> Path:
        path = self.root / f"{name}.metrics.port"
        path.unlink(missing_ok=True)
        return path

    def _spawn(self, module: str, args: list[str], server: ServerState, port_file: Path) -> subprocess.Popen:
        """Starts a server and logs its pid with a marker only its command line holds (the port file)."""
        proc = spawn(module, args, Path(server.log), wrap=self._wrap(server))
        with open(self.root / PID_LOG, "a") as f:
            f.write(f"{proc.pid} {module} {port_file}\n")
        return proc

    def _await_port(self, proc: subprocess.Popen, port_file: Path, what: str, log_path: str) -> int:
        def ready() -> bool:
            if proc.poll() is not None:
                tail = Path(log_path).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} exited with status {proc.returncode}; log {log_path}:\n{tail}")
            return read_port(port_file) is not None

        wait_for(ready, self.start_timeout, f"{what} to start (log: {log_path})")
        port = read_port(port_file)
        assert port is not None
        return port

    def _save(self) -> None:
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=2))
        os.replace(tmp, self.root / STATE_FILE)

    def stop(self) -> None:
        """Stops every server process started in this directory, by pid (storage, metaservers, then
        etcd): the current ones and any older ones (restarted by another process, or left by a
        start that failed half way)."""
        for name, (server, marker) in reversed(list(zip(self._names(), servers_of(self.state)))):
            if server.pid:
                stop_pid(server.pid, marker, proc=self._procs.get(name))
        for pid, module, _ in reversed(self._live_logged()):
            stop_pid(pid, module)
        self._procs.clear()
        if self.state.tls:
            certs.withdraw(self.root, self._meta_addresses())
        if self.state.auth:
            auth_files.withdraw(self.root, self._meta_addresses())
        if self.state.etcd:
            self._etcd().stop()
        if self.state.netns_tag:
            lab = self.lab or NetnsLab.attach(self.state.netns_hosts, self.state.netns_tag)
            lab.destroy()
            self.lab = None

    def known_pids(self) -> list[tuple[int, str, str]]:
        """(pid, module, marker) of every server process ever started in this directory."""
        try:
            lines = (self.root / PID_LOG).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0].isdigit():
                out.append((int(parts[0]), parts[1], parts[2]))
        return out

    def _live_logged(self) -> list[tuple[int, str, str]]:
        return [(pid, module, marker) for pid, module, marker in self.known_pids()
                if is_alive(pid) and is_ours(pid, module) and is_ours(pid, marker)]

    def live_pids(self) -> list[int]:
        """Server processes of this directory that still run."""
        return [pid for pid, _, _ in self._live_logged()]

    def start_missing(self, timeout: float | None = None) -> list[str]:
        """Starts every metaserver and storage server of this directory that is not running, on its
        recorded port and data; returns their names. Storage nodes come back through resync."""
        running = self.running()
        started = []
        for i in range(len(self.state.metas)):
            if not running[self._meta_name(i)]:
                self._start_meta(i)
                started.append(self._meta_name(i))
        if self.state.tls:
            certs.publish(self.root, self._meta_addresses())
        if self.state.auth:
            auth_files.publish(self.root, self._meta_addresses())
        for i in range(self.storage_nodes):
            if not running[f"storage-{i}"]:
                self._start_storage(i)
                started.append(f"storage-{i}")
        if started:
            self.wait_healthy(self.start_timeout if timeout is None else timeout)
        return started

    def _names(self) -> list[str]:
        return [self._meta_name(i) for i in range(len(self.state.metas))] + \
            [f"storage-{i}" for i in range(self.storage_nodes)]

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- health ----

    def routing(self) -> mpb.RoutingTable:
        # Several metaservers: time to move past the standbys to the elected manager.
        deadline = 0.0 if len(self.state.metas) == 1 else 5.0
        return MetaClient(self.address, timeout=2.0, retry_deadline=deadline, tls=self.tls_dir or False,
                          token=self.root_token or False).routing(0).routing

    def is_healthy(self) -> bool:
        try:
            table = self.routing()
        except OSError:
            return False
        alive = {n.node_id for n in table.nodes if n.alive}
        if len(alive) < self.storage_nodes or len(table.chains) < self.expected_chains():
            return False
        return all(t.state == mpb.SERVING and t.node_id in alive for c in table.chains for t in c.targets)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Waits until every node is alive and every target of every chain is serving."""
        wait_for(self.is_healthy, timeout, f"cluster at {self.address} to be healthy")

    # ---- faults ----

    def _signal(self, name: str, pid: int, sig: signal.Signals) -> None:
        if not pid:
            raise ValueError(f"{name} was never started")
        os.kill(pid, sig)

    def kill_storage(self, i: int) -> None:
        node = self.state.storage[i]
        self._signal(f"storage-{i}", node.pid, signal.SIGKILL)
        proc = self._procs.get(f"storage-{i}")
        if proc is not None:
            proc.wait(timeout=10)

    def pause_storage(self, i: int) -> None:
        self._signal(f"storage-{i}", self.state.storage[i].pid, signal.SIGSTOP)

    def resume_storage(self, i: int) -> None:
        self._signal(f"storage-{i}", self.state.storage[i].pid, signal.SIGCONT)

    def restart_storage(self, i: int) -> None:
        """Stops storage server i if it runs (SIGTERM), then starts it again on its port and data."""
        node = self.state.storage[i]
        stop_pid(node.pid, STORAGE_MODULE, proc=self._procs.get(f"storage-{i}"))
        self._start_storage(i)

    def kill_meta(self, i: int = 0) -> None:
        name = self._meta_name(i)
        self._signal(name, self.state.metas[i].pid, signal.SIGKILL)
        proc = self._procs.get(name)
        if proc is not None:
            proc.wait(timeout=10)

    def pause_meta(self, i: int = 0) -> None:
        self._signal(self._meta_name(i), self.state.metas[i].pid, signal.SIGSTOP)

    def resume_meta(self, i: int = 0) -> None:
        self._signal(self._meta_name(i), self.state.metas[i].pid, signal.SIGCONT)

    def restart_meta(self, i: int = 0) -> None:
        stop_pid(self.state.metas[i].pid, META_MODULE, proc=self._procs.get(self._meta_name(i)))
        self._start_meta(i)

    # ---- reattaching (the CLI runs up, status and down as separate commands) ----

    @classmethod
    def attach(cls, root: str | os.PathLike[str]) -> "LocalCluster":
        root = Path(root).resolve()
        try:
            data = json.loads((root / STATE_FILE).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(2, "no cluster state in this directory", str(root / STATE_FILE)) from None
        state = ClusterState.from_json(data)
        cluster = cls(root, storage_nodes=len(state.storage), replicas=state.replicas,
                      targets_per_node=state.targets_per_node, host=state.host,
                      heartbeat_timeout=state.heartbeat_timeout, meta_backend=state.meta_backend,
                      metaservers=len(state.metas), etcd_members=max(1, len(state.etcd)),
                      netns=bool(state.netns_tag), tls=state.tls, auth=state.auth)
        cluster.state = state
        return cluster

    def running(self) -> dict[str, bool]:
        out = {name: _running(server, marker)
               for name, (server, marker) in zip(self._names(), servers_of(self.state))}
        for i, m in enumerate(self.state.etcd):
            out[f"etcd-{i}"] = bool(m.get("pid")) and is_alive(m["pid"]) and is_ours(m["pid"], "etcd")
        return out


def _running(server: ServerState, marker: str) -> bool:
    return bool(server.pid) and is_alive(server.pid) and is_ours(server.pid, marker)
