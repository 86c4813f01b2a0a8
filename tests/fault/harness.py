"""Shared pieces of the fault tests: a small fast-failing cluster, a recorded client load, checks.

Every wait polls with a deadline (`wait_for`); deadlines are generous because the machine is a
loaded 2-core box. The load records what clients saw: acknowledged whole-file writes (each to a new
path, so each must read back exactly), and a register history per single-chunk file for the
linearizability checker (writes that failed count as maybe-applied; failed reads are dropped).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chainfs.client import ChainClient
from chainfs.client.fsck.check import FsckReport, fsck
from chainfs.client.rpc.storage_client import ReadSpec
from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.proto import meta_pb2 as mpb

from tests.grants import grant
from tests.linearizability import Recorder, check_history

log = logging.getLogger(__name__)

T = 2.0               # heartbeat timeout of the fault clusters
CHUNK = 64 * 1024     # small chunks: several per file, little data
REG_BYTES = 4096      # size of a register value (one chunk)
WAIT = 90.0           # generous deadline for recoveries on a loaded machine


def make_cluster(root: Path, nodes: int = 3, **kwargs: Any) -> LocalCluster:
    """One chain over `nodes` nodes (one target each), heartbeat timeout T, a fast collector;
    `kwargs` go to LocalCluster (meta_backend="etcd", metaservers=3, ...)."""
    return LocalCluster(root, storage_nodes=nodes, replicas=nodes, targets_per_node=1,
                        heartbeat_timeout=T, gc_interval=0.3, gc_grace=0.0, start_timeout=120, **kwargs)


def client(cluster: LocalCluster, meta_timeout: float = 10.0) -> ChainClient:
    """A client of the cluster; a short `meta_timeout` lets it leave a cut-off metaserver sooner."""
    return ChainClient(cluster.address, meta_timeout=meta_timeout, retry_deadline=30.0)


def node_index(cluster: LocalCluster, node_id: int) -> int:
    """The LocalCluster index of a storage node id (from each node's saved identity)."""
    for i, server in enumerate(cluster.state.storage):
        saved = json.loads((Path(server.data_dir) / "node.json").read_text())
        if int(saved["node_id"]) == node_id:
            return i
    raise KeyError(node_id)


def the_chain(cluster: LocalCluster) -> mpb.ChainInfo:
    (chain,) = cluster.routing().chains
    return chain


def states(cluster: LocalCluster) -> dict[int, int]:
    """node id -> public state of its target in the (single) chain."""
    return {t.node_id: t.state for t in the_chain(cluster).targets}


def wait_state(cluster: LocalCluster, node_id: int, state: int, timeout: float = WAIT) -> None:
    wait_for(lambda: states(cluster).get(node_id) == state, timeout,
             f"node {node_id} to be {mpb.TargetState.Name(state)}", interval=0.1)


def wait_fsck_clean(cluster: LocalCluster, timeout: float = WAIT) -> FsckReport:
    last: list[FsckReport] = []

    def clean() -> bool:
        try:
            last[:] = [fsck(cluster.address, timeout=20)]
        except OSError as exc:
            log.info("fsck failed: %s", exc)
            return False
        return last[0].ok

    try:
        wait_for(clean, timeout, "fsck to report everything equal", interval=0.5)
    except TimeoutError:
        raise AssertionError(f"fsck problems: {last[0].problems if last else '(never ran)'}") from None
    return last[0]


def value_bytes(tag: str) -> bytes:
    return tag.encode().ljust(REG_BYTES, b".")


def tag_of(data: bytes) -> str:
    return data.rstrip(b".").decode()


@dataclass
class Load:
    """Writers of new files and register readers/writers, all recording what they saw."""

    cluster: LocalCluster
    writers: int = 3
    reg_clients: int = 4
    registers: int = 2
    acked: dict[str, bytes] = field(default_factory=dict)
    failed_writes: int = 0
    history: Recorder = field(default_factory=Recorder)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    reg_inodes: list[mpb.Inode] = field(default_factory=list)
    meta_timeout: float = 10.0

    def start(self) -> "Load":
        c = client(self.cluster, self.meta_timeout)
        c.mkdir("/load", parents=True, layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        for k in range(self.registers):
            self.reg_inodes.append(c.write_file(f"/load/reg{k}", value_bytes("init")))
        for i in range(self.writers):
            self._spawn(self._writer, i)
        for i in range(self.reg_clients):
            self._spawn(self._register_client, i)
        return self

    def _spawn(self, target, i: int) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=target, args=(i,), daemon=True, name=f"load-{target.__name__}-{i}")
        self._threads.append(t)
        t.start()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, more: int, timeout: float = WAIT) -> None:
        """Waits until `more` further writes have been acknowledged (the load makes progress)."""
        target = self.acked_count() + more
        wait_for(lambda: self.acked_count() >= target, timeout, f"{more} more acknowledged writes", interval=0.1)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in self._threads), "load threads did not stop"
        log.warning("load: %d writes acknowledged, %d failed; %d register ops recorded",
                    len(self.acked), self.failed_writes, self.history.count())

    def _writer(self, i: int) -> None:
        c = client(self.cluster, self.meta_timeout)
        rnd = random.Random(i)
        n = 0
        while not self._stop.is_set():
            n += 1
            path = f"/load/w{i}/f{n}"
            data = rnd.randbytes(rnd.randint(1, 3 * CHUNK))
            try:
                c.write_file(path, data)
            except OSError as exc:
                log.info("write of %s failed (not acknowledged): %s", path, exc)
                with self._lock:
                    self.failed_writes += 1
                continue
            with self._lock:
                self.acked[path] = data

    def _register_client(self, i: int) -> None:
        c = client(self.cluster, self.meta_timeout)
        for inode in self.reg_inodes:  # registers are chunks written straight to the nodes
            grant(self.cluster, c, inode.id)
        rnd = random.Random(100 + i)
        n = 0
        while not self._stop.is_set():
            n += 1
            k = rnd.randrange(len(self.reg_inodes))
            inode = self.reg_inodes[k]
            chain = inode.layout.chains[0]
            call = time.monotonic()
            if rnd.random() < 0.4:
                tag = f"c{i}-{n}"
                try:
                    c.storage.write_chunk(chain, inode.id, 0, value_bytes(tag), CHUNK)
                    self.history.record(k, "w", tag, call, time.monotonic(), i)
                except OSError:
                    self.history.record(k, "w", tag, call, None, i)  # maybe applied
            else:
                try:
                    (data,) = c.storage.read([ReadSpec(chain, inode.id, 0, 0, REG_BYTES)])
                except OSError:
                    continue  # a failed read tells nothing
                self.history.record(k, "r", tag_of(data), call, time.monotonic(), i)
            self._stop.wait(0.01)

    # ---- checks ----

    def check_acked(self, replicas: int) -> None:
        """Every acknowledged file reads back exactly, from every replica."""
        c = client(self.cluster)
        with self._lock:
            acked = dict(self.acked)
        assert acked, "the load acknowledged no write"
        for path, data in sorted(acked.items()):
            for replica in range(replicas):
                got = c.read_file(path, replica=replica)
                assert got == data, f"{path} (replica {replica}): {len(got)} bytes differ from the acknowledged {len(data)}"

    def check_linearizable(self) -> None:
        result = check_history(dict(self.history.ops), {k: "init" for k in range(self.registers)})
        if not result.ok:
            dump = self.cluster.root / "history.json"
            dump.write_text(json.dumps({str(k): [[o.call, o.ret, o.kind, o.value, o.client] for o in ops]
                                        for k, ops in self.history.ops.items()}))
            raise AssertionError(f"register {result.key}: {result.message} (history in {dump})")
        assert self.history.count() > 0
