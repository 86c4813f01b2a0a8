"""Ceiling peers for `chainfs bench io`: a raw TCP peer and a bare gRPC peer, run as their own
processes so that every baseline crosses a process boundary as chainfs's bytes do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from chainfs.cluster.process import read_port, wait_for
from chainfs.common.config import GRPC_OPTIONS, MiB

SINK = "/bench.Bench/Sink"
SOURCE = "/bench.Bench/Source"


def _ident(b: bytes) -> bytes:
    return b  # raw bytes on the wire: no protobuf


def _publish(port_file: str, port: int) -> None:
    Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)


def serve_grpc(port_file: str) -> None:
    """A sink that counts bytes and a source that streams N MiB, 1 MiB a message."""

    def sink(request_iterator, context):  # type: ignore[no-untyped-def]
        return sum(len(m) for m in request_iterator).to_bytes(8, "big")

    def source(request, context):  # type: ignore[no-untyped-def]
        block = os.urandom(MiB)
        for _ in range(int.from_bytes(request, "big")):
            yield block

    handlers = {
        "Sink": grpc.stream_unary_rpc_method_handler(sink, _ident, _ident),
        "Source": grpc.unary_stream_rpc_method_handler(source, _ident, _ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(4), options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bench", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _publish(port_file, port)
    server.wait_for_termination()


def serve_tcp(port_file: str) -> None:
    """Per connection: an 8-byte request, b"R" + MiB count (send them) or b"W" + MiB count (take them)."""
    listener = socket.create_server(("127.0.0.1", 0))
    _publish(port_file, listener.getsockname()[1])
    block = memoryview(os.urandom(MiB))
    sink = memoryview(bytearray(MiB))

    def serve(conn: socket.socket) -> None:
        with conn:
            request = conn.recv(9, socket.MSG_WAITALL)
            count = int.from_bytes(request[1:], "big")
            if request[:1] == b"R":
                for _ in range(count):
                    conn.sendall(block)
            else:
                left = count * MiB
                while left:
                    n = conn.recv_into(sink, min(left, MiB))
                    if not n:
                        return
                    left -= n
                conn.sendall(b"k")

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


class Peer:
    """A ceiling peer process, stopped by its pid when the bench is done."""

    def __init__(self, kind: str, tmp: Path) -> None:
        port_file = tmp / f"{kind}.port"
        self.proc = subprocess.Popen([sys.executable, "-m", "chainfs.bench.peers", kind, str(port_file)])
        wait_for(lambda: read_port(port_file) is not None, 30, f"the {kind} peer")
        self.port = read_port(port_file)
        if kind == "grpc":
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=GRPC_OPTIONS)
            self.sink = self.channel.stream_unary(SINK, request_serializer=_ident, response_deserializer=_ident)
            self.source = self.channel.unary_stream(SOURCE, request_serializer=_ident, response_deserializer=_ident)

    def tcp(self, op: bytes, mib: int, buffer: memoryview) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(op + mib.to_bytes(8, "big"))
            if op == b"R":
                got, total = 0, mib * MiB
                while got < total:
                    n = sock.recv_into(buffer[got:], total - got)
                    if not n:
                        raise ConnectionError("tcp peer closed early")
                    got += n
            else:
                sock.sendall(buffer[:mib * MiB])
                if sock.recv(1) != b"k":
                    raise ConnectionError("tcp peer did not confirm")

    def grpc_write(self, mib: int, block: bytes) -> None:
        if int.from_bytes(self.sink(iter([block] * mib), timeout=600), "big") != mib * MiB:
            raise RuntimeError("grpc sink lost bytes")

    def grpc_read(self, mib: int) -> None:
        if sum(len(m) for m in self.source(mib.to_bytes(8, "big"), timeout=600)) != mib * MiB:
            raise RuntimeError("grpc source sent the wrong count")

    def stop(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    {"grpc": serve_grpc, "tcp": serve_tcp}[sys.argv[1]](sys.argv[2])
