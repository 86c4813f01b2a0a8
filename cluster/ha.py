"""The parts of LocalCluster that only clusters without a single point of failure use: the etcd
members (`meta_backend="etcd"`), the elected metaserver, and hosts in network namespaces
(`netns=True`). A mixin, so that `cluster/local.py` keeps the common lifecycle.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainfs.cluster.etcd import EtcdCluster
from chainfs.cluster.netns import NetnsLab, host_command
from chainfs.cluster.process import is_alive, is_ours, wait_for

if TYPE_CHECKING:
    from chainfs.cluster.state import ClusterState, ServerState

META_MODULE = "chainfs.metaserver"


def _alive_meta(pid: int) -> bool:
    return bool(pid) and is_alive(pid) and is_ours(pid, META_MODULE)




class HaMixin:
    # Provided by LocalCluster.
    state: ClusterState
    root: Path
    etcd_members: int
    etcd: EtcdCluster | None
    lab: NetnsLab | None

    if TYPE_CHECKING:

        def _save(self) -> None: ...

    def _make_lab(self) -> tuple[Any, list[str] | None]:
        """One netns host per server: etcd members first, then metaservers, then storage nodes."""
        etcd = self.etcd_members if self.state.meta_backend == "etcd" else 0
        servers = [*self.state.metas, *self.state.storage]
        self.lab = NetnsLab(etcd + len(servers)).create()
        self.state.netns_tag, self.state.netns_hosts = self.lab.tag, self.lab.hosts
        for k, server in enumerate(servers):
            server.netns, server.host = etcd + k, self.lab.ip(etcd + k)
        self._save()
        lab = self.lab
        return (lambda i: lab.wrap(i)), ([lab.ip(i) for i in range(etcd)] or None)

    def host_index(self, role: str, i: int = 0) -> int:
        """The netns host of `etcd` member i, `meta` i or `storage` i (for `lab` faults)."""
        if role == "etcd":
            if not self.state.netns_hosts or i >= len(self.state.etcd):
                raise ValueError(f"no netns host for etcd member {i}")
            return i
        server = (self.state.metas if role == "meta" else self.state.storage)[i]
        if server.netns < 0:
            raise ValueError(f"{role} {i} does not run in a network namespace (netns=True)")
        return server.netns

    def _wrap(self, server: ServerState) -> list[str] | None:
        if server.netns < 0:
            return None
        return host_command(self.state.netns_tag, server.netns)

    def _etcd(self) -> EtcdCluster:
        if self.etcd is None:
            if not self.state.etcd:
                raise ValueError("this cluster runs no etcd (meta_backend is rocksdb)")
            wrap = None
            if self.state.netns_tag:
                tag = self.state.netns_tag
                wrap = lambda i: host_command(tag, i)  # noqa: E731
            self.etcd = EtcdCluster(self.root / "etcd", members_state=self.state.etcd, wrap=wrap)
        return self.etcd

    def leader_meta(self, timeout: float = 0.0, exclude: int | None = None) -> int:
        """The index of the metaserver running the cluster manager (0 with rocksdb); waits up to
        `timeout` for one (other than `exclude`) to be elected, else raises LookupError."""
        if self.state.meta_backend != "etcd":
            return 0
        from chainfs.metaserver.etcd_client import EtcdClient

        ports = {f"{self.state.host_of(m)}:{m.port}": i for i, m in enumerate(self.state.metas)}
        client = EtcdClient(self._etcd().endpoints, timeout=2.0)
        found: list[int] = []

        def elected() -> bool:
            try:
                kv = client.get(self.state.etcd_prefix.encode() + b"/leader")
            except OSError:
                return False
            i = ports.get(kv.value.decode()) if kv is not None else None
            # A killed leader's key outlives it until its lease lapses: only a running one counts.
            if i is not None and i != exclude and _alive_meta(self.state.metas[i].pid):
                found.append(i)
                return True
            return False

        try:
            if timeout <= 0:
                if not elected():
                    raise LookupError("no metaserver is the cluster manager now")
            else:
                wait_for(elected, timeout, "a metaserver to be elected cluster manager")
        finally:
            client.close()
        return found[-1]

    def kill_etcd(self, i: int) -> None:
        self._etcd().kill(i)

    def pause_etcd(self, i: int) -> None:
        self._etcd().pause(i)

    def resume_etcd(self, i: int) -> None:
        self._etcd().resume(i)

    def restart_etcd(self, i: int) -> None:
        self._etcd().restart(i)
        self.state.etcd = [asdict(m) for m in self._etcd().members]
        self._save()
