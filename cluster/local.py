"""A local multi-process cluster: one metaserver and N storage servers on loopback.

`chainfs cluster up/down/status` and the tests use it. State lives under one directory:
`cluster.json` (addresses and pids), `logs/`, `meta/`, `storage-<i>/`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chainfs.common.config import DEFAULT_HOST
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.meta_client import MetaClient
from chainfs.cluster.process import is_alive, is_ours, read_port, spawn, stop_pid, wait_for

log = logging.getLogger(__name__)

META_MODULE = "chainfs.metaserver"
STORAGE_MODULE = "chainfs.storageserver"
STATE_FILE = "cluster.json"


@dataclass
class ServerState:
    pid: int = 0
    port: int = 0
    data_dir: str = ""
    log: str = ""


@dataclass
class ClusterState:
    host: str
    replicas: int
    targets_per_node: int
    heartbeat_timeout: float
    meta: ServerState
    storage: list[ServerState] = field(default_factory=list)
    gc_interval: float = 2.0
    gc_grace: float = 30.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.meta.port}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["address"] = self.address
        data["url"] = f"chainfs://{self.address}"
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClusterState":
        return cls(
            host=data["host"], replicas=data["replicas"], targets_per_node=data["targets_per_node"],
            heartbeat_timeout=data["heartbeat_timeout"], meta=ServerState(**data["meta"]),
            storage=[ServerState(**s) for s in data["storage"]],
            gc_interval=data.get("gc_interval", 2.0), gc_grace=data.get("gc_grace", 30.0),
        )


class LocalCluster:
    """Starts, inspects, faults and stops a local cluster; a context manager for tests."""

    def __init__(self, root: str | os.PathLike[str], storage_nodes: int = 3, replicas: int = 3,
                 targets_per_node: int = 4, port: int = 0, host: str = DEFAULT_HOST,
                 heartbeat_timeout: float = 5.0, start_timeout: float = 60.0, gc_interval: float = 2.0,
                 gc_grace: float = 30.0, fsync: bool = True) -> None:
        if storage_nodes < 1:
            raise ValueError(f"storage_nodes must be >= 1, got {storage_nodes}")
        if not 1 <= replicas <= storage_nodes:
            raise ValueError(f"replicas must be between 1 and storage_nodes ({storage_nodes}), got {replicas}")
        if targets_per_node < 1:
            raise ValueError(f"targets_per_node must be >= 1, got {targets_per_node}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        self.root = Path(root).resolve()
        self.start_timeout = start_timeout
        self.fsync = fsync  # False only where durability is not under test (it costs 3 fsyncs per hop)
        self._procs: dict[str, subprocess.Popen] = {}
        self.state = ClusterState(
            host=host, replicas=replicas, targets_per_node=targets_per_node,
            heartbeat_timeout=heartbeat_timeout, gc_interval=gc_interval, gc_grace=gc_grace,
            meta=ServerState(port=port, data_dir=str(self.root / "meta"), log=str(self.root / "logs" / "meta.log")),
            storage=[ServerState(data_dir=str(self.root / f"storage-{i}"),
                                 log=str(self.root / "logs" / f"storage-{i}.log")) for i in range(storage_nodes)],
        )

    # ---- addresses ----

    @property
    def address(self) -> str:
        return self.state.address

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
            if any(_running(s, m) for s, m in _servers(old)):
                raise FileExistsError(17, "a cluster is already running in this directory", str(self.root))
        try:
            self._start_meta()
            for i in range(self.storage_nodes):
                self._start_storage(i)
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_meta(self) -> None:
        meta = self.state.meta
        port_file = self.root / "meta.port"
        port_file.unlink(missing_ok=True)
        args = ["--data-dir", meta.data_dir, "--host", self.state.host, "--port", str(meta.port),
                "--port-file", str(port_file), "--replication", str(self.state.replicas),
                "--min-nodes", str(self.storage_nodes),
                "--heartbeat-timeout", str(self.state.heartbeat_timeout),
                "--gc-interval", str(self.state.gc_interval), "--gc-grace", str(self.state.gc_grace)]
        proc = spawn(META_MODULE, args, Path(meta.log))
        self._procs["meta"] = proc
        meta.pid = proc.pid
        meta.port = self._await_port(proc, port_file, "metaserver", meta.log)
        self._save()

    def _start_storage(self, i: int) -> None:
        node = self.state.storage[i]
        port_file = self.root / f"storage-{i}.port"
        port_file.unlink(missing_ok=True)
        args = ["--data-dir", node.data_dir, "--meta", self.address, "--host", self.state.host,
                "--port", str(node.port), "--port-file", str(port_file),
                "--targets", str(self.state.targets_per_node)]
        if not self.fsync:
            args.append("--no-fsync")
        proc = spawn(STORAGE_MODULE, args, Path(node.log))
        self._procs[f"storage-{i}"] = proc
        node.pid = proc.pid
        node.port = self._await_port(proc, port_file, f"storage server {i}", node.log)
        self._save()

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
        """Stops every server this cluster started, by pid."""
        for name, (server, marker) in zip(self._names(), _servers(self.state)):
            if server.pid:
                stop_pid(server.pid, marker, proc=self._procs.get(name))
        self._procs.clear()

    def _names(self) -> list[str]:
        return ["meta"] + [f"storage-{i}" for i in range(self.storage_nodes)]

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- health ----

    def routing(self) -> mpb.RoutingTable:
        return MetaClient(self.address, timeout=2.0, retry_deadline=0).routing(0).routing

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

    def kill_meta(self) -> None:
        self._signal("meta", self.state.meta.pid, signal.SIGKILL)
        proc = self._procs.get("meta")
        if proc is not None:
            proc.wait(timeout=10)

    def restart_meta(self) -> None:
        stop_pid(self.state.meta.pid, META_MODULE, proc=self._procs.get("meta"))
        self._start_meta()

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
                      heartbeat_timeout=state.heartbeat_timeout)
        cluster.state = state
        return cluster

    def running(self) -> dict[str, bool]:
        return {name: _running(server, marker)
                for name, (server, marker) in zip(self._names(), _servers(self.state))}


def _servers(state: ClusterState) -> list[tuple[ServerState, str]]:
    return [(state.meta, META_MODULE)] + [(s, STORAGE_MODULE) for s in state.storage]


def _running(server: ServerState, marker: str) -> bool:
    return bool(server.pid) and is_alive(server.pid) and is_ours(server.pid, marker)
