"""The storage server process end to end, against a small fake cluster manager in the test process:
register, heartbeat, chain formation, a replicated write, SIGKILL + restart with chunks intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest

from chainfs.common.checksum import crc32c
from chainfs.common.errors import Reason, abort
from chainfs.common.rpc import ChannelPool, bind, make_server
from chainfs.proto import meta_pb2, meta_pb2_grpc, storage_pb2, storage_pb2_grpc

REPLICAS = 3


class FakeManager(meta_pb2_grpc.ClusterManagerServicer):
    """Assigns ids, forms one chain of the first three targets, serves the routing table."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routing = meta_pb2.RoutingTable(version=1, replication=REPLICAS)
        self.next_node = 1
        self.next_target = 101
        self.registrations: list[tuple[int, list[int]]] = []
        self.heartbeats = 0
        self._targets: dict[int, list[tuple[int, int]]] = {}

    def _bump(self) -> None:
        self.routing.version += 1
        targets = [t for n in self.routing.nodes for t in self._targets.get(n.node_id, [])]
        if len(targets) >= REPLICAS and not self.routing.chains:
            self.routing.chains.add(chain_id=1, version=1, targets=[
                meta_pb2.TargetInfo(target_id=t, node_id=n, chain_id=1, state=meta_pb2.SERVING)
                for n, t in targets[:REPLICAS]
            ])

    def Register(self, request: meta_pb2.RegisterRequest, context: grpc.ServicerContext) -> meta_pb2.RegisterReply:
        with self.lock:
            node_id = request.node_id or self.next_node
            self.next_node = max(self.next_node, node_id + 1)
            ids = []
            for t in request.targets:
                ids.append(t.target_id or self.next_target)
                self.next_target = max(self.next_target, ids[-1] + 1)
            self.registrations.append((node_id, ids))
            for n in self.routing.nodes:
                if n.node_id == node_id:
                    n.address = request.address
                    break
            else:
                self.routing.nodes.add(node_id=node_id, address=request.address, alive=True)
            self._targets[node_id] = [(node_id, t) for t in ids]
            self._bump()
            return meta_pb2.RegisterReply(node_id=node_id, target_ids=ids, routing=self.routing)

    def Heartbeat(self, request: meta_pb2.HeartbeatRequest, context: grpc.ServicerContext) -> meta_pb2.HeartbeatReply:
        with self.lock:
            self.heartbeats += 1
            if request.node_id not in self._targets:
                abort(context, Reason.NOT_FOUND, "unknown node")
            changed = request.routing_version != self.routing.version
            return meta_pb2.HeartbeatReply(routing_changed=changed, routing=self.routing if changed else None,
                                           heartbeat_timeout_ms=5000)

    def GetRouting(self, request: meta_pb2.RoutingRequest, context: grpc.ServicerContext) -> meta_pb2.RoutingReply:
        with self.lock:
            changed = request.known_version != self.routing.version
            return meta_pb2.RoutingReply(changed=changed, routing=self.routing if changed else None)


@pytest.fixture
def manager() -> Iterator[tuple[FakeManager, str]]:
    fake = FakeManager()
    server = make_server(max_workers=8)
    meta_pb2_grpc.add_ClusterManagerServicer_to_server(fake, server)
    port = bind(server, "127.0.0.1", 0)
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(0)


def wait_for(check: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start(data_dir: Path, meta: str) -> tuple[subprocess.Popen, Path]:
    port_file = data_dir.with_name(data_dir.name + ".port")
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainfs.storageserver", "--insecure", "--data-dir", str(data_dir), "--meta", meta,
         "--targets", "1", "--port-file", str(port_file), "--log-level", "WARNING",
         "--no-rejoin-wait"],  # the fake manager has no failure detection to mark us offline
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return proc, port_file


def port_of(proc: subprocess.Popen, port_file: Path) -> int:
    def ready() -> int:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        return int(port_file.read_text()) if port_file.exists() else 0
    return int(wait_for(ready, what="port file"))


def test_server_registers_replicates_and_survives_sigkill(tmp_path: Path, manager: tuple[FakeManager, str]) -> None:
    fake, meta = manager
    pool = ChannelPool()
    procs: list[subprocess.Popen] = []
    try:
        started = [start(tmp_path / f"node{i}", meta) for i in range(REPLICAS)]
        procs = [p for p, _ in started]
        ports = [port_of(p, f) for p, f in started]
        chain = wait_for(lambda: fake.routing.chains and fake.routing.chains[0], what="chain")
        addr_of = {n.node_id: n.address for n in fake.routing.nodes}
        order = [addr_of[t.node_id] for t in chain.targets]
        assert sorted(int(a.rsplit(":", 1)[1]) for a in order) == sorted(ports)
        stubs = [storage_pb2_grpc.StorageStub(pool.get(a)) for a in order]
        data = os.urandom(300_000)
        header = storage_pb2.WriteHeader(chain_id=1, chain_version=1, chunk=storage_pb2.ChunkId(inode=42, index=0),
                                         length=len(data), replace=True, data_crc=crc32c(data),
                                         chunk_size=1 << 20, request_id="t:1")

        def do_write() -> storage_pb2.WriteReply:
            return stubs[0].Write(iter([storage_pb2.WriteRequest(header=header),
                                        storage_pb2.WriteRequest(data=data)]), timeout=10)

        def try_write() -> storage_pb2.WriteReply | None:
            try:  # the nodes learn the chain by heartbeat
                return do_write()
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.ABORTED, err
                return None

        reply = wait_for(try_write, what="first write")
        assert reply.meta.version == 1

        def read(stub: storage_pb2_grpc.StorageStub) -> tuple[int, bytes]:
            item = storage_pb2.ReadItem(chain_id=1, chain_version=1, chunk=storage_pb2.ChunkId(inode=42, index=0),
                                        length=1 << 20)
            status, out = None, bytearray()
            for r in stub.Read(storage_pb2.ReadRequest(items=[item]), timeout=10):
                if r.WhichOneof("body") == "header":
                    status = r.header.status
                else:
                    out.extend(r.data)
            return status, bytes(out)

        assert all(read(s) == (storage_pb2.OK, data) for s in stubs)

        # SIGKILL the middle node and restart it: same ids, chunk intact and served.
        middle = next(i for i, p in enumerate(ports) if order[1].endswith(f":{p}"))
        procs[middle].send_signal(signal.SIGKILL)
        procs[middle].wait(timeout=10)
        before = len(fake.registrations)
        saved = json.loads((tmp_path / f"node{middle}" / "node.json").read_text())
        proc, port_file = start(tmp_path / f"node{middle}", meta)
        procs[middle] = proc
        port = port_of(proc, port_file)
        assert fake.registrations[before] == (saved["node_id"], list(saved["targets"].values()))  # same ids
        assert fake.registrations[before] in fake.registrations[:before]
        stub = storage_pb2_grpc.StorageStub(pool.get(f"127.0.0.1:{port}"))
        wait_for(lambda: read(stub)[0] == storage_pb2.OK, what="restarted node serving")
        assert read(stub) == (storage_pb2.OK, data)

        # SIGTERM stops every node cleanly.
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=20) == 0, p.stderr.read().decode() if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pool.close()
