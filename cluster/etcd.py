"""A local etcd cluster (Debian's `etcd` binary, one process per member) for tests and `cluster up`.

Why tuned flags: a local cluster should notice a dead member within a fraction of a second (short
heartbeat and election timeouts, which also lets a 1 s lease be the manager's lease), accept the
large transactions of a recursive remove (--max-txn-ops) and keep its history short (compaction).
Members may run inside network namespaces: `hosts[i]` is member i's address and `wrap(i)` the
command prefix that enters its namespace.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from chainfs.cluster.process import is_alive, stop_pid, wait_for

log = logging.getLogger(__name__)

ETCD_BINARY = "etcd"


def etcd_binary() -> str | None:
    """The etcd server on PATH (Debian: /usr/bin/etcd), or None."""
    return shutil.which(ETCD_BINARY)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: str
    log: str
    pid: int = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


class EtcdCluster:
    """Starts, kills, restarts and stops N etcd members under `root`; a context manager."""

    def __init__(self, root: str | os.PathLike[str], members: int = 1, hosts: Sequence[str] | None = None,
                 heartbeat_ms: int = 50, election_ms: int = 500, start_timeout: float = 30.0,
                 wrap: Callable[[int], list[str]] | None = None, members_state: list[dict] | None = None,
                 die_with_parent: bool = False) -> None:
        if members < 1:
            raise ValueError(f"etcd members must be >= 1, got {members}")
        if etcd_binary() is None:
            raise FileNotFoundError(2, "etcd is not installed (scripts/install_sysdeps.sh installs etcd-server)",
                                    ETCD_BINARY)
        self.root = Path(root).resolve()
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.start_timeout = start_timeout
        self.wrap = wrap or (lambda i: [])
        # Tests: members die with the process that started them, even one killed before teardown
        # (`chainfs cluster up` leaves them running on purpose, so it keeps the default).
        self.die_with_parent = die_with_parent
        self.token = f"chainfs-{uuid.uuid4().hex[:12]}"
        self._procs: dict[int, subprocess.Popen] = {}
        if members_state is not None:
            self.members = [EtcdMember(**m) for m in members_state]
            return
        hosts = list(hosts or ["127.0.0.1"] * members)
        if len(hosts) != members:
            raise ValueError("one host per etcd member")
        self.members = [
            EtcdMember(name=f"etcd{i}", host=h, client_port=free_port("127.0.0.1" if h.startswith("127.") else "0.0.0.0"),
                       peer_port=free_port("127.0.0.1" if h.startswith("127.") else "0.0.0.0"),
                       data_dir=str(self.root / f"etcd-{i}"), log=str(self.root / "logs" / f"etcd-{i}.log"))
            for i, h in enumerate(hosts)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _command(self, i: int) -> list[str]:
        m = self.members[i]
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        state = "existing" if (Path(m.data_dir) / "member").exists() else "new"
        return [*self.wrap(i), etcd_binary() or ETCD_BINARY,
                "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", f"http://{m.endpoint}", "--advertise-client-urls", f"http://{m.endpoint}",
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", state,
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
                "--max-txn-ops", "100000", "--max-request-bytes", str(16 << 20),
                "--auto-compaction-mode", "revision", "--auto-compaction-retention", "100000",
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]

    def start(self) -> EtcdCluster:
        try:
            for i in range(len(self.members)):
                self._spawn(i)
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, i: int) -> None:
        m = self.members[i]
        Path(m.log).parent.mkdir(parents=True, exist_ok=True)
        Path(m.data_dir).parent.mkdir(parents=True, exist_ok=True)
        with open(m.log, "ab") as out:
            proc = subprocess.Popen(self._command(i), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True,
                                    preexec_fn=_die_with_parent if self.die_with_parent else None)
        self._procs[i] = proc
        m.pid = proc.pid

    def member_ready(self, i: int) -> bool:
        """Member i answers and sees a raft leader."""
        from chainfs.metaserver.etcd_client import EtcdClient  # only when etcd is used

        proc = self._procs.get(i)
        if proc is not None and proc.poll() is not None:
            tail = Path(self.members[i].log).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"etcd member {i} exited with status {proc.returncode}:\n{tail}")
        client = EtcdClient([self.members[i].endpoint], timeout=1.0)
        try:
            return client.status(0, timeout=0.5).leader != 0
        except Exception:  # noqa: BLE001 - not up yet
            return False
        finally:
            client.close()

    def wait_ready(self, timeout: float = 30.0, members: Sequence[int] | None = None) -> None:
        ids = list(range(len(self.members))) if members is None else list(members)
        wait_for(lambda: all(self.member_ready(i) for i in ids), timeout, f"etcd members {ids} to be ready")

    def kill(self, i: int) -> None:
        m = self.members[i]
        if m.pid and is_alive(m.pid):
            os.kill(m.pid, signal.SIGKILL)
        proc = self._procs.get(i)
        if proc is not None:
            proc.wait(timeout=10)

    def pause(self, i: int) -> None:
        os.kill(self.members[i].pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        os.kill(self.members[i].pid, signal.SIGCONT)

    def restart(self, i: int) -> None:
        """Stops member i if it runs, then starts it again on its data (it rejoins the cluster)."""
        m = self.members[i]
        if m.pid:
            stop_pid(m.pid, "etcd", proc=self._procs.get(i))
        self._spawn(i)

    def stop(self) -> None:
        for i, m in enumerate(self.members):
            if m.pid:
                stop_pid(m.pid, "etcd", proc=self._procs.get(i))
        self._procs.clear()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
