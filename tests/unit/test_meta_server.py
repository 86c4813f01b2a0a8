"""The metaserver over gRPC: in-process for the handlers, and as a real process that is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chainfs.common.config import GRPC_OPTIONS
from chainfs.common.errors import REASON_KEY, Reason, reason_of
from chainfs.metaserver.server import MetaServer
from chainfs.proto import meta_pb2 as pb
from chainfs.proto import meta_pb2_grpc as pb_grpc

TIMEOUT = 5.0


def rpc_reason(fn, request) -> Reason:
    with pytest.raises(grpc.RpcError) as ei:
        fn(request, timeout=TIMEOUT)
    return reason_of(ei.value)


def test_in_process_handlers(tmp_path: Path) -> None:
    with MetaServer(tmp_path / "meta", port=0, replication=2) as server:
        with grpc.insecure_channel(server.address, options=GRPC_OPTIONS) as channel:
            ns = pb_grpc.NamespaceStub(channel)
            cm = pb_grpc.ClusterManagerStub(channel)
            for n in range(2):
                reply = cm.Register(
                    pb.RegisterRequest(address=f"127.0.0.1:{7000 + n}", targets=[pb.RegisterTarget(path="/t")]),
                    timeout=TIMEOUT,
                )
                assert reply.node_id == n + 1 and len(reply.target_ids) == 1
            assert len(reply.routing.chains) == 1 and reply.routing.replication == 2
            hb = cm.Heartbeat(pb.HeartbeatRequest(node_id=1, routing_version=reply.routing.version), timeout=TIMEOUT)
            assert not hb.routing_changed
            assert rpc_reason(cm.Heartbeat, pb.HeartbeatRequest(node_id=99)) == Reason.NOT_FOUND
            assert cm.GetRouting(pb.RoutingRequest(known_version=0), timeout=TIMEOUT).changed

            ns.Mkdir(pb.MkdirRequest(path="/d/e", parents=True), timeout=TIMEOUT)
            f = ns.Create(pb.CreateRequest(path="/d/f", layout=pb.Layout(stripe_width=1)), timeout=TIMEOUT)
            assert list(f.layout.chains) == [1]
            listing = ns.List(pb.ListRequest(path="/d", limit=1), timeout=TIMEOUT)
            assert [e.name for e in listing.entries] == ["e"] and listing.more
            s = ns.OpenWrite(pb.OpenWriteRequest(path="/d/g", mode=pb.REPLACE, client_id="c1"), timeout=TIMEOUT)
            assert ns.RenewSession(pb.SessionRequest(session_id=s.session_id), timeout=TIMEOUT).session_id == s.session_id
            # Lengths past the maximum file size are refused before storage is asked (no chunks here).
            for hostile in (2**64 - 1, 2**50 + 1):
                bad = pb.CloseWriteRequest(session_id=s.session_id, length=hostile, commit=True)
                assert rpc_reason(ns.CloseWrite, bad) == Reason.INVALID_ARGUMENT
            done = ns.CloseWrite(pb.CloseWriteRequest(session_id=s.session_id, length=0, commit=True), timeout=TIMEOUT)
            assert done.length == 0  # the session stayed open through the refusals
            ns.Rename(pb.RenameRequest(src="/d/g", dst="/d/h"), timeout=TIMEOUT)
            assert ns.Stat(pb.PathRequest(path="/d/h"), timeout=TIMEOUT).id == done.id
            ns.Remove(pb.RemoveRequest(path="/d", recursive=True), timeout=TIMEOUT)
            assert rpc_reason(ns.Stat, pb.PathRequest(path="/d")) == Reason.NOT_FOUND
            assert ns.SetLayout(pb.SetLayoutRequest(path="/", layout=pb.Layout(stripe_width=3)), timeout=TIMEOUT).layout.stripe_width == 3
            assert rpc_reason(ns.SetLayout, pb.SetLayoutRequest(path="/")) == Reason.INVALID_ARGUMENT
            assert rpc_reason(ns.Stat, pb.PathRequest(path="")) == Reason.INVALID_ARGUMENT
            assert rpc_reason(ns.Remove, pb.RemoveRequest(path="/")) == Reason.INVALID_ARGUMENT
            assert rpc_reason(ns.CloseWrite, pb.CloseWriteRequest(session_id="0" * 32)) == Reason.SESSION_EXPIRED
            assert rpc_reason(ns.CloseWrite, pb.CloseWriteRequest(session_id="12345")) == Reason.INVALID_ARGUMENT
            assert rpc_reason(ns.RenewSession, pb.SessionRequest(session_id="")) == Reason.INVALID_ARGUMENT
            assert sorted(r.inode_id for r in server.namespace.gc_records()) == [f.id, done.id]


def wait_for_port(proc: subprocess.Popen, port_file: Path, deadline_s: float = 20.0) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"metaserver exited early with {proc.returncode}")
        if port_file.exists():
            return int(port_file.read_text())
        time.sleep(0.02)
    raise AssertionError("metaserver did not publish its port in time")


def start(data: Path, port_file: Path, log: Path) -> subprocess.Popen:
    if port_file.exists():
        port_file.unlink()
    cmd = [sys.executable, "-m", "chainfs.metaserver", "--insecure", "--data-dir", str(data), "--port", "0",
           "--port-file", str(port_file), "--log-level", "INFO"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_process_survives_sigkill(tmp_path: Path) -> None:
    data, port_file, log = tmp_path / "meta", tmp_path / "port", tmp_path / "meta.log"
    proc = start(data, port_file, log)
    try:
        port = wait_for_port(proc, port_file)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="chainfs.Namespace"), timeout=TIMEOUT)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            ns = pb_grpc.NamespaceStub(channel)
            made = ns.Mkdir(pb.MkdirRequest(path="/a/b", parents=True), timeout=TIMEOUT)
            assert ns.Stat(pb.PathRequest(path="/a/b"), timeout=TIMEOUT) == made
            with pytest.raises(grpc.RpcError) as ei:
                ns.Mkdir(pb.MkdirRequest(path="/a/b"), timeout=TIMEOUT)
            assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert dict(ei.value.trailing_metadata())[REASON_KEY] == Reason.EXISTS.value
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        proc = start(data, port_file, log)
        port = wait_for_port(proc, port_file)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS) as channel:
            ns = pb_grpc.NamespaceStub(channel)
            assert ns.Stat(pb.PathRequest(path="/a/b"), timeout=TIMEOUT) == made
            nxt = ns.Mkdir(pb.MkdirRequest(path="/c"), timeout=TIMEOUT)
            assert nxt.id > made.id  # the id counter survived too
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        stop(proc)
    assert "metaserver stopped" in log.read_text()
    assert not any(name.startswith("port.tmp") for name in os.listdir(tmp_path))


def test_sweeper_thread_expires_sessions(tmp_path: Path) -> None:
    with MetaServer(tmp_path / "meta", replication=1, session_lease=0.1, sweep_interval=0.05) as server:
        server.cluster.register(0, "127.0.0.1:7000", [(0, "/t")])
        session = server.namespace.open_write("/f", pb.REPLACE)
        deadline = time.monotonic() + 10
        while server.namespace.sessions() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.namespace.sessions() == []
        assert [r.inode_id for r in server.namespace.gc_records()] == [session.inode.id]
