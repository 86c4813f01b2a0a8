"""The stores users would pick instead of chainfs, for `chainfs bench kv`: Redis and Mooncake Store.

Each peer is started by the bench on free loopback ports and stopped by pid: Redis is Debian's
`redis-server` with persistence off, driven by redis-py with hiredis (pipelines and MGET, one
round trip per batch); Mooncake Store is the `mooncake-transfer-engine-non-cuda` wheel's master
(with its HTTP metadata service) and its Python client over TCP (`put_batch`, `batch_is_exist`,
`get_batch`). A peer that cannot be installed or started raises `PeerUnavailable` saying why.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from chainfs.cluster.etcd import free_port
from chainfs.cluster.process import stop_pid, wait_for

log = logging.getLogger(__name__)


class PeerUnavailable(RuntimeError):
    """This peer cannot run here; the message says exactly why."""


class _Server:
    """A peer's server process on loopback, stopped by its pid."""

    def __init__(self, args: list[str], log_path: Path, cwd: Path | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=cwd)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise PeerUnavailable(f"{Path(self.proc.args[0]).name} exited with {self.proc.returncode}: {tail}")

    def stop(self) -> None:
        stop_pid(self.proc.pid, Path(self.proc.args[0]).name, proc=self.proc)


class RedisPeer:
    """redis-server on a free loopback port, no RDB, no AOF; redis-py with hiredis as the client."""

    name = "redis"

    def __init__(self, work: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise PeerUnavailable("redis-server is not installed (scripts/install_sysdeps.sh installs it)")
        try:
            import redis
            from redis.utils import HIREDIS_AVAILABLE
        except ImportError as exc:
            raise PeerUnavailable(f"redis-py is not installed: {exc}") from None
        if not HIREDIS_AVAILABLE:
            raise PeerUnavailable("hiredis is not installed: redis-py would parse replies in pure Python")
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        self.server = _Server([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--protected-mode", "yes", "--dir", str(work),
                               "--maxmemory-policy", "noeviction"], work / "redis.log")
        self.client = redis.Redis(host="127.0.0.1", port=self.port)

        def up() -> bool:
            self.server.check()
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_for(up, 20.0, "redis-server to answer PING")
        except BaseException:
            self.server.stop()
            raise
        self.version = self.client.info("server").get("redis_version", "?")

    def put(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for k, v in zip(keys, values):
            pipe.set(k, v)
        pipe.execute()

    def exist(self, keys: Sequence[bytes]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.exists(k)
        return [bool(x) for x in pipe.execute()]

    def get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.client.mget(list(keys))

    def close(self) -> None:
        self.client.close()
        self.server.stop()


class MooncakePeer:
    """Mooncake Store: its master (with the HTTP metadata service) and one client over TCP."""

    name = "mooncake"

    def __init__(self, work: Path, segment_bytes: int = 1 << 30) -> None:
        # Its transfer engine would otherwise advertise the host's first interface, and its glog
        # would fill the terminal with INFO lines.
        os.environ.setdefault("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            from mooncake.store import MooncakeDistributedStore
        except ImportError as exc:
            raise PeerUnavailable(f"the mooncake-transfer-engine-non-cuda wheel does not import: {exc}") from None
        master = Path(sys.executable).with_name("mooncake_master")
        if not master.exists():
            raise PeerUnavailable(f"mooncake_master is not installed beside {sys.executable}")
        work.mkdir(parents=True, exist_ok=True)
        rpc, meta, metrics = free_port(), free_port(), free_port()
        self.server = _Server([str(master), "-rpc_port", str(rpc), "-rpc_address", "127.0.0.1",
                               "-enable_http_metadata_server=true", "-http_metadata_server_host", "127.0.0.1",
                               "-http_metadata_server_port", str(meta), "-metrics_port", str(metrics),
                               "-enable_metric_reporting=false"], work / "mooncake-master.log", cwd=work)
        try:
            wait_for(lambda: (self.server.check(), _listening(meta))[1], 30.0, "mooncake_master to listen")
            self.store = MooncakeDistributedStore()
            rc = self.store.setup("127.0.0.1", f"http://127.0.0.1:{meta}/metadata", segment_bytes, 256 << 20,
                                  "tcp", "", f"127.0.0.1:{rpc}")
            if rc != 0:
                raise PeerUnavailable(f"MooncakeDistributedStore.setup returned {rc} (log: {work})")
        except BaseException:
            self.server.stop()
            raise
        self.version = _version("mooncake-transfer-engine-non-cuda")

    def put(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        rc = self.store.put_batch([k.hex() for k in keys], list(values))
        if rc != 0:
            raise RuntimeError(f"mooncake put_batch returned {rc}")

    def exist(self, keys: Sequence[bytes]) -> list[bool]:
        return [x == 1 for x in self.store.batch_is_exist([k.hex() for k in keys])]

    def get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [v or None for v in self.store.get_batch([k.hex() for k in keys])]

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.server.stop()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def start_peer(kind: str, work: Path) -> RedisPeer | MooncakePeer:
    t = time.monotonic()
    peer = RedisPeer(work / "redis") if kind == "redis" else MooncakePeer(work / "mooncake")
    log.info("%s %s up in %.1f s", kind, peer.version, time.monotonic() - t)
    return peer
