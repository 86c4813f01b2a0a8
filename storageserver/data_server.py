"""The storage node's lean data service: chunk writes and reads over TCP (mutual TLS when the
process has a TLS config), and short-circuit opens over a Unix socket (docs/architecture.md,
"The data path"; docs/security.md, "TLS").

A thread per connection, blocking sockets: `recv_into`, `sendmsg` and `sendfile` release the GIL
for the whole transfer, so the bytes move at socket speed while Python only parses headers. Each
connection carries one request at a time; a client or forwarding node keeps a pool of them.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path

from google.protobuf.message import DecodeError

from chainfs.common import auth, capabilities, config, tls, wire
from chainfs.common.checksum import BLOCK_BYTES
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.metrics import record_request
from chainfs.proto import storage_pb2
from chainfs.storageserver.admission import Admission
from chainfs.storageserver.metrics import record_data_drop
from chainfs.storageserver.reads import ChunkReader
from chainfs.storageserver.replication import Replicator

log = logging.getLogger(__name__)

SERVICE = "Storage"  # data-path requests count under the Storage service's RPC metrics
MAX_LOCAL_ITEMS = 250  # file descriptors in one SCM_RIGHTS message (Linux allows 253)
SMALL_ITEM = 128 << 10  # whole chunks up to this size are read and sent gathered, not sendfile(2)d
SEND_GATHER = 1 << 20   # bytes of gathered frames per send
_UNIX_PATH_MAX = 107


class SocketBody:
    """The payload of one OP_WRITE frame, read straight into the writer's buffer."""

    def __init__(self, sock: socket.socket, length: int, stall_timeout: float | None = None) -> None:
        self.sock = sock
        self.left = length
        self.broken = False
        # the whole payload's deadline (config.MIN_PAYLOAD_RATE): a trickle does not keep the connection
        self.deadline = None if stall_timeout is None else \
            time.monotonic() + stall_timeout + length / config.MIN_PAYLOAD_RATE

    def read_into(self, view: memoryview) -> None:
        if len(view) > self.left:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"the data ended {len(view) - self.left} bytes early")
        self.broken = True  # until the piece is complete: a failure here leaves the stream mid-frame
        wire.recv_exact(self.sock, view, self.deadline)
        self.broken = False
        self.left -= len(view)

    def finish(self) -> None:
        if self.left:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"{self.left} more bytes than the header announced")

    def discard(self) -> None:
        scratch = memoryview(bytearray(min(self.left, wire.SEND_PIECE) or 1))
        while self.left:
            n = min(self.left, len(scratch))
            self.read_into(scratch[:n])


class DataServer:
    """Accepts data connections and serves each on its own thread until it closes; binds its TCP
    port (and Unix socket) in `start()`, like the node's gRPC server."""

    def __init__(self, replicator: Replicator, reader: ChunkReader, host: str = config.DEFAULT_HOST,
                 port: int = 0, local_socket: str | os.PathLike[str] | None = None,
                 stall_timeout: float | None = None, max_connections: int | None = None,
                 max_per_client: int | None = None) -> None:
        self.replicator = replicator
        # inside a frame, the peer must send a byte at least every stall_timeout s (config.py)
        self.stall_timeout = config.STALL_TIMEOUT if stall_timeout is None else stall_timeout
        self.admission = Admission(max_connections, max_per_client)  # the node's and each client's cap
        self.reader = reader
        self._host, self._requested_port = host, port
        self._local_path = Path(local_socket) if local_socket is not None else None
        self._listener: socket.socket | None = None
        self.port = 0
        self.local_socket = ""
        self._unix: socket.socket | None = None
        self._tls = tls.server_wrapper()  # TCP connections only: the Unix socket stays local
        self._stopped = threading.Event()
        self._conns: set[socket.socket] = set()
        self._mu = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _bind_unix(self, path: Path) -> socket.socket | None:
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            log.warning("%s is too long for a Unix socket; short-circuit reads are off for this node", path)
            return None
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, 0o600)  # only the storage node's own user may open its chunk files this way
        sock.listen(128)
        self.local_socket = str(path)
        return sock

    def start(self) -> None:
        self._listener = socket.create_server((self._host, self._requested_port), backlog=128)
        self.port = self._listener.getsockname()[1]
        if self._local_path is not None:
            self._unix = self._bind_unix(self._local_path)
        for listener, local in ((self._listener, False), (self._unix, True)):
            if listener is not None:
                t = threading.Thread(target=self._accept_loop, args=(listener, local), daemon=True,
                                     name="data-accept-local" if local else "data-accept")
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        self._stopped.set()
        for listener in (self._listener, self._unix):
            if listener is not None:
                try:
                    listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                listener.close()
        with self._mu:
            conns = list(self._conns)
        for conn in conns:
            try:
                socket.socket.shutdown(conn, socket.SHUT_RDWR)  # not SSLSocket's: it drops the TLS state
            except OSError:
                pass
        if self.local_socket:
            Path(self.local_socket).unlink(missing_ok=True)

    def _accept_loop(self, listener: socket.socket, local: bool) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if not local:
                wire.tune(conn)
            with self._mu:
                full = len(self._conns) >= self.admission.max_connections
                if not full:
                    self._conns.add(conn)
            if full:
                self._refuse(conn, local)
                continue
            threading.Thread(target=self._serve, args=(conn, local), daemon=True, name="data-conn").start()

    def _refuse(self, conn: socket.socket, local: bool) -> None:
        """A connection past max_connections: BUSY (retryable) in plaintext, then closed; a TLS
        peer, which expects a handshake first, only sees the close."""
        self.admission.note_refusal("refused", f"data connections refused: {self.admission.max_connections} open")
        try:
            if self._tls is None or local:
                conn.settimeout(1.0)
                wire.send_error(conn, ChainfsError(Reason.BUSY, f"node serves {self.admission.max_connections} data "
                                                                "connections already"))
        except OSError:
            pass
        finally:
            conn.close()

    def _handshake(self, conn: socket.socket) -> ssl.SSLSocket | None:
        """The TLS side of an accepted connection, or None (closed) when its peer fails the
        handshake: a plaintext client, or one without a certificate from the cluster's CA."""
        assert self._tls is not None
        conn.settimeout(self.stall_timeout)
        try:
            wrapped = self._tls.wrap_socket(conn, server_side=True)
        except (OSError, ValueError) as exc:
            log.info("data connection refused: TLS handshake failed: %s", exc)
            with self._mu:
                self._conns.discard(conn)
            conn.close()
            return None
        with self._mu:
            self._conns.discard(conn)
            self._conns.add(wrapped)
        return wrapped

    def _serve(self, conn: socket.socket, local: bool) -> None:
        scratch = bytearray()
        if self._tls is not None and not local:
            wrapped = self._handshake(conn)
            if wrapped is None:
                return
            conn = wrapped
        client: str | None = None
        try:
            ident: auth.Identity | None = None  # no checks (no secret) or the local socket
            if auth.secret() is not None and not local:
                ident = self._authenticate(conn)
                if ident is None:
                    return
            key = None if local else self.admission.client_key(conn, ident)
            if key is not None:
                held = self.admission.admit(key)
                if held is not None:
                    wire.send_error(conn, ChainfsError(Reason.BUSY, f"{key} holds {held} data connections "
                                                                    "to this node already"))
                    return
                client = key  # counted until the connection closes
            if ident is not None:
                wire.send_frame(conn, wire.OP_OK, b"")  # the token's verdict, once admitted
            while not self._stopped.is_set():
                conn.settimeout(None)  # an idle pooled connection may wait for its next request
                try:  # from the frame's first byte on, the peer must keep up (stall_timeout)
                    op, header_len, payload_len = wire.recv_prefix(conn, self.stall_timeout)
                except wire.PeerClosed:
                    return
                # a header trickled in a byte at a time must still come whole within the stall timeout
                header = wire.recv_header(conn, header_len, time.monotonic() + self.stall_timeout)
                started = time.perf_counter()
                if op == wire.OP_WRITE and not local:
                    scratch, failure = self._write(conn, header, payload_len, scratch, ident)
                    record_request(SERVICE, "Write", time.perf_counter() - started, failure)
                elif op == wire.OP_READ and not local and not payload_len:
                    scratch = self._read(conn, header, scratch, ident)
                    record_request(SERVICE, "Read", time.perf_counter() - started)
                elif op == wire.OP_OPEN_LOCAL and local and not payload_len:
                    self._open_local(conn, header)
                    record_request(SERVICE, "OpenLocal", time.perf_counter() - started)
                else:
                    wire.send_error(conn, ChainfsError(Reason.INVALID_ARGUMENT, f"unexpected data op {op}"))
                    return
        except ChainfsError as exc:
            log.info("data connection dropped: %s", exc.message)
            try:
                wire.send_error(conn, exc)  # say why before closing (a malformed or oversize frame)
            except OSError:
                pass
        except TimeoutError:
            record_data_drop("stalled")
            log.info("data connection dropped: stalled inside a frame (stall timeout %.1f s)", self.stall_timeout)
        except OSError as exc:
            log.debug("data connection closed: %s", exc)
        except Exception:  # noqa: BLE001 - a connection's failure must not take the node down
            log.exception("data connection failed")
        finally:
            with self._mu:
                self._conns.discard(conn)
            if client is not None:
                self.admission.release(client)
            conn.close()

    def _authenticate(self, conn: socket.socket) -> auth.Identity | None:
        """The connection's first frame must be OP_AUTH with a token this cluster signed (the
        Unix socket needs none: its mode 0600 admits only this node's user)."""
        conn.settimeout(self.stall_timeout)  # before its token, a peer may not idle either
        try:
            op, header_len, payload_len = wire.recv_prefix(conn, self.stall_timeout)
        except wire.PeerClosed:
            return None
        if op != wire.OP_AUTH or payload_len:
            wire.send_error(conn, ChainfsError(Reason.UNAUTHENTICATED, "data connection without a token "
                                                                       "(first frame must be OP_AUTH)"))
            return None
        try:
            token = wire.recv_header(conn, header_len, time.monotonic() + self.stall_timeout)
            ident = auth.check(token.decode("ascii", "replace"))
        except ChainfsError as exc:
            log.info("data connection refused: %s", exc.message)
            wire.send_error(conn, exc)
            return None
        return ident  # _serve answers OP_OK once the client's cap admits the connection

    @staticmethod
    def _parse(message: type, raw: bytes):  # type: ignore[no-untyped-def]
        try:
            return message.FromString(raw)
        except DecodeError as exc:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"malformed {message.__name__}: {exc}") from None

    def _write(self, conn: socket.socket, raw: bytes, payload_len: int, scratch: bytearray,
               ident: auth.Identity | None = None) -> tuple[bytearray, Reason | None]:
        """Serves one OP_WRITE; returns the connection's scratch buffer (grown for patches) and the
        reason it failed, if it did."""
        body = SocketBody(conn, payload_len, self.stall_timeout)
        try:
            header = self._parse(storage_pb2.WriteHeader, raw)
            auth.check_forward(header, ident)
            capabilities.require(header.capability, header.chunk.inode, capabilities.WRITE, ident)
            if header.length != payload_len:
                raise ChainfsError(Reason.INVALID_ARGUMENT,
                                   f"header announces {header.length} bytes, frame carries {payload_len}")
            if not header.replace and len(scratch) < payload_len:
                scratch = bytearray(payload_len)  # a patch is received aside; a replace into its file
            reply = self.replicator.write(header, body, buffer=scratch)
        except ChainfsError as exc:
            if body.broken:
                raise  # the stream is mid-frame: only closing the connection is safe
            body.discard()
            wire.send_error(conn, exc)
            return scratch, exc.reason
        except Exception as exc:
            if body.broken or isinstance(exc, OSError):
                raise
            log.exception("data write failed")
            body.discard()
            wire.send_error(conn, ChainfsError(Reason.INTERNAL, f"{type(exc).__name__}: {exc}"))
            return scratch, Reason.INTERNAL
        wire.send_frame(conn, wire.OP_OK, reply.SerializeToString())
        return scratch, None

    def _read(self, conn: socket.socket, raw: bytes, scratch: bytearray,
              ident: auth.Identity | None = None) -> bytearray:
        try:
            request = self._parse(storage_pb2.ReadRequest, raw)
            if not request.items:  # the reply is one frame per item: none would leave the peer waiting
                raise ChainfsError(Reason.INVALID_ARGUMENT, "a data-port read names at least one item")
            capabilities.require_read(request.capabilities, (i.chunk.inode for i in request.items), ident)
        except ChainfsError as exc:
            wire.send_error(conn, exc)
            return scratch
        # Small frames are gathered and go out in few sends (one per SEND_GATHER bytes), not a
        # prefix, header and sendfile per item: the per-item syscalls dominated small reads.
        gathered: list[bytes | bytearray | memoryview] = []
        gathered_bytes = 0

        def flush() -> None:
            nonlocal gathered_bytes
            if gathered:
                wire.send_all(conn, gathered)
                gathered.clear()
                gathered_bytes = 0

        def gather(head: bytes, payload: bytes = b"") -> None:
            nonlocal gathered_bytes
            gathered.extend((wire.pack_prefix(wire.OP_ITEM, len(head), len(payload)), head))
            if payload:
                gathered.append(payload)
            gathered_bytes += len(payload) + len(head)
            if gathered_bytes >= SEND_GATHER or len(gathered) >= 60:
                flush()

        for header, source in self.reader.resolve(request):
            if source is None:
                gather(header.SerializeToString())
                continue
            try:
                if source.whole_chunk and source.length <= SMALL_ITEM:
                    # As with sendfile below, the client checks the bytes against the stored CRC.
                    data = os.pread(source.file.fileno(), source.length, source.start)
                    if len(data) == source.length:
                        header.data_crc = source.meta.crc
                        gather(header.SerializeToString(), data)
                        source.served()
                        continue
                flush()
                if source.whole_chunk and wire.can_sendfile(conn) and self._file_holds(source):
                    # The client checks these bytes against the stored CRC (sent as data_crc), so
                    # they can go from the page cache to the socket without passing through us.
                    # Not under TLS: those bytes are read and encrypted here (the path below).
                    header.data_crc = source.meta.crc
                    head = header.SerializeToString()
                    wire.send_all(conn, [wire.pack_prefix(wire.OP_ITEM, len(head), source.length), head])
                    wire.send_file_range(conn, source.file, source.start, source.length)
                    source.served()
                    continue
                if len(scratch) < source.length + 2 * BLOCK_BYTES:
                    scratch = bytearray(source.length + 2 * BLOCK_BYTES)  # the covering blocks
                view = self.reader.load(header, source, scratch)
                wire.send_frame(conn, wire.OP_ITEM, header.SerializeToString(), [view] if view is not None else [])
                if view is not None:
                    source.served()
            finally:
                source.close()
        flush()
        return scratch

    @staticmethod
    def _file_holds(source) -> bool:  # type: ignore[no-untyped-def]
        """Whether the file still has every byte its metadata promises (else: an I/O error item)."""
        return os.fstat(source.file.fileno()).st_size >= source.start + source.length

    def _open_local(self, conn: socket.socket, raw: bytes) -> None:
        request = self._parse(storage_pb2.ReadRequest, raw)
        # no token on this socket (mode 0600), but the read capabilities still: a process of the
        # node's user reads only what the metaserver let its caller stat
        capabilities.require_read(request.capabilities, (i.chunk.inode for i in request.items), None)
        if len(request.items) > MAX_LOCAL_ITEMS:
            wire.send_error(conn, ChainfsError(Reason.INVALID_ARGUMENT,
                                               f"at most {MAX_LOCAL_ITEMS} chunks per short-circuit open"))
            return
        reply = storage_pb2.LocalOpenReply()
        sources = []
        try:
            for header, source in self.reader.resolve(request):
                reply.items.append(header)
                if source is not None:
                    sources.append(source)
                    source.served()  # handed over: the client reads these bytes itself
            body = reply.SerializeToString()
            socket.send_fds(conn, [wire.pack_prefix(wire.OP_OK, len(body), 0)], [s.file.fileno() for s in sources])
            wire.send_all(conn, [body])
        finally:
            for source in sources:
                source.close()
