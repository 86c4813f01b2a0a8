"""What `cluster.json` holds: a local cluster's settings and, per server, its ports, directories
and current pid. `LocalCluster` (`local.py`) writes it at every change and `attach()` reads it, so
`chainfs cluster status/down/restart-node` work from another process."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chainfs.cluster.limits import DataLimits

META_MODULE = "chainfs.metaserver"
STORAGE_MODULE = "chainfs.storageserver"
STATE_FILE = "cluster.json"


@dataclass
class ServerState:
    pid: int = 0
    port: int = 0
    data_dir: str = ""
    log: str = ""
    host: str = ""  # its own address on a netns host; "" = the cluster's host
    netns: int = -1  # its netns host index, -1 when not in a namespace
    metrics_port: int = 0


@dataclass
class ClusterState:
    host: str
    replicas: int
    targets_per_node: int
    heartbeat_timeout: float
    metas: list[ServerState]
    storage: list[ServerState] = field(default_factory=list)
    gc_interval: float = 2.0
    gc_grace: float = 30.0
    meta_backend: str = "rocksdb"
    etcd: list[dict[str, Any]] = field(default_factory=list)  # EtcdMember fields
    etcd_prefix: str = "/chainfs"
    netns_tag: str = ""  # the NetnsLab of a `netns=True` cluster
    netns_hosts: int = 0
    scrub_mib_s: float = 16.0       # each storage node's background scrub rate (0 = off)
    scrub_interval: float = 600.0   # seconds between scrub passes
    tls: bool = False               # mutual TLS everywhere, certificates in tls/ (cluster/certs.py)
    auth: bool = True               # every call carries a token signed with auth/secret (auth_files.py)
    limits: DataLimits = field(default_factory=DataLimits)  # the storage nodes' data-service limits
    capability_ttl: float | None = None  # seconds the metaserver's chunk capabilities last (None: its default)

    @property
    def meta(self) -> ServerState:
        return self.metas[0]

    def host_of(self, server: ServerState) -> str:
        return server.host or self.host

    @property
    def address(self) -> str:
        return ",".join(f"{self.host_of(m)}:{m.port}" for m in self.metas)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["meta"] = asdict(self.meta)  # the first metaserver, as single-metaserver readers expect
        data["address"] = self.address
        data["url"] = f"chainfs://{self.address}"
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClusterState":
        metas = data.get("metas") or [data["meta"]]
        return cls(
            host=data["host"], replicas=data["replicas"], targets_per_node=data["targets_per_node"],
            heartbeat_timeout=data["heartbeat_timeout"], metas=[ServerState(**m) for m in metas],
            storage=[ServerState(**s) for s in data["storage"]],
            gc_interval=data.get("gc_interval", 2.0), gc_grace=data.get("gc_grace", 30.0),
            meta_backend=data.get("meta_backend", "rocksdb"), etcd=data.get("etcd", []),
            etcd_prefix=data.get("etcd_prefix", "/chainfs"),
            netns_tag=data.get("netns_tag", ""), netns_hosts=data.get("netns_hosts", 0),
            scrub_mib_s=data.get("scrub_mib_s", 16.0), scrub_interval=data.get("scrub_interval", 600.0),
            tls=data.get("tls", False), auth=data.get("auth", True), limits=DataLimits(**data.get("limits", {})),
            capability_ttl=data.get("capability_ttl"),
        )


def servers_of(state: ClusterState) -> list[tuple[ServerState, str]]:
    """Every server with the module its process runs (what `ps` shows of it)."""
    return [(m, META_MODULE) for m in state.metas] + [(s, STORAGE_MODULE) for s in state.storage]
