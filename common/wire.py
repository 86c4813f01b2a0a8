"""The lean data path's framing: chunk bytes over plain TCP, control in small protobuf headers.

Every frame is a fixed 16-byte prefix, a protobuf header and a raw payload:

    magic u32 | op u8 | flags u8 | reserved u16 | header length u32 | payload length u32

Payloads never pass through protobuf: senders hand memoryviews (or a file, with sendfile) to the
socket, receivers `recv_into` preallocated buffers. docs/architecture.md ("The data path") gives
the conversation for each op and why this path beat gRPC with raw-bytes serializers.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import BinaryIO, Callable, Sequence

from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import storage_pb2

MAGIC = 0x43465331  # "CFS1"
PREFIX = struct.Struct("<IBBHII")

# Requests.
OP_WRITE = 1        # header WriteHeader, payload the chunk bytes; reply OP_OK(WriteReply)
OP_READ = 2         # header ReadRequest; reply one OP_ITEM(ReadItemHeader, bytes) per item
OP_OPEN_LOCAL = 3   # Unix socket only: header ReadRequest; reply OP_OK(LocalOpenReply) + fds
OP_AUTH = 4         # first frame of a TCP connection to a node with a secret: header the token
                    # (ASCII, `common.auth`); reply OP_OK() or OP_ERROR and the node closes
# Replies.
OP_OK = 16
OP_ITEM = 17
OP_ERROR = 18       # header DataError: the request failed as a whole

MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 64 << 20  # the largest chunk
SEND_PIECE = 1 << 20          # cut-through granularity: forward this much as soon as it arrives


class PeerClosed(ConnectionError):
    """The other end closed the connection (between or inside frames)."""


def pack_prefix(op: int, header_len: int, payload_len: int) -> bytes:
    return PREFIX.pack(MAGIC, op, 0, 0, header_len, payload_len)


def recv_exact(sock: socket.socket, view: memoryview, deadline: float | None = None) -> None:
    """Fills `view` completely from the socket, or raises PeerClosed; with `deadline` (a
    time.monotonic() value), raises TimeoutError past it however the bytes trickle in."""
    got = 0
    total = len(view)
    before = sock.gettimeout() if deadline is not None else None
    try:
        while got < total:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{got} of {total} bytes by the deadline")
                sock.settimeout(left if before is None else min(left, before))
            n = sock.recv_into(view[got:], total - got)
            if n == 0:
                raise PeerClosed(f"connection closed after {got} of {total} bytes")
            got += n
    finally:
        if deadline is not None:
            sock.settimeout(before)


def recv_prefix(sock: socket.socket, stall_timeout: float | None = None) -> tuple[int, int, int]:
    """Reads one frame prefix: (op, header length, payload length); validates the bounds. With
    `stall_timeout`, the first byte may take as long as the socket's timeout allows (an idle pooled
    connection); the rest must arrive within `stall_timeout` s, and the socket then times out after
    `stall_timeout` s without a byte."""
    raw = bytearray(PREFIX.size)
    view = memoryview(raw)
    if stall_timeout is None:
        recv_exact(sock, view)
    else:
        recv_exact(sock, view[:1])
        sock.settimeout(stall_timeout)
        recv_exact(sock, view[1:], time.monotonic() + stall_timeout)
    return _check_prefix(raw)


def _check_prefix(raw: bytearray | memoryview) -> tuple[int, int, int]:
    magic, op, _flags, _reserved, header_len, payload_len = PREFIX.unpack(raw)
    if magic != MAGIC:
        raise ChainfsError(Reason.INVALID_ARGUMENT, "not a chainfs data frame")
    if header_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
        raise ChainfsError(Reason.TOO_LARGE, f"frame of {header_len}+{payload_len} bytes is too large")
    return op, header_len, payload_len


def read_exact(stream: BinaryIO, buffer: bytearray | memoryview) -> bytearray | memoryview:
    """Fills `buffer` from a buffered socket reader (`socket.makefile("rb")`), or raises PeerClosed."""
    view = memoryview(buffer).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise PeerClosed(f"connection closed after {got} of {len(view)} bytes")
        got += n
    return buffer


def read_prefix(stream: BinaryIO) -> tuple[int, int, int]:
    """`recv_prefix` from a buffered socket reader."""
    return _check_prefix(read_exact(stream, bytearray(PREFIX.size)))


def recv_header(sock: socket.socket, header_len: int, deadline: float | None = None) -> bytes:
    buf = bytearray(header_len)
    recv_exact(sock, memoryview(buf), deadline)
    return bytes(buf)


def send_frame(sock: socket.socket, op: int, header: bytes,
               payload: Sequence[bytes | bytearray | memoryview] = ()) -> None:
    """One frame with a gathered write: prefix, header and payload parts go without joining."""
    length = sum(len(p) for p in payload)
    parts: list[bytes | bytearray | memoryview] = [pack_prefix(op, len(header), length), header]
    parts.extend(p for p in payload if len(p))
    send_all(sock, parts)


def authenticate(sock: socket.socket, token: str) -> None:
    """Presents `token` on a new data connection and waits for the node's verdict."""
    send_frame(sock, OP_AUTH, token.encode("ascii"))
    op, header_len, payload_len = recv_prefix(sock)
    header = recv_header(sock, header_len)
    if op == OP_ERROR:
        raise error_of(header)
    if op != OP_OK or payload_len:
        raise ChainfsError(Reason.INTERNAL, f"unexpected reply op {op} to the data authentication")


def send_all(sock: socket.socket, parts: list[bytes | bytearray | memoryview],
             on_timeout: Callable[[], None] | None = None) -> None:
    """`sendmsg` until every part is out (the kernel may take less than all of them at once).

    With `on_timeout`, a send that times out (the peer is not reading) calls it and tries again;
    it raises to give up. Without it, the timeout propagates.
    """
    views = [memoryview(p).cast("B") for p in parts]
    if isinstance(sock, ssl.SSLSocket):
        _send_all_tls(sock, views, on_timeout)
        return
    while views:
        try:
            sent = sock.sendmsg(views[:64])
        except socket.timeout:
            if on_timeout is None:
                raise
            on_timeout()
            continue
        while sent:
            step = min(sent, len(views[0]))
            views[0] = views[0][step:]
            sent -= step
            if not len(views[0]):
                views.pop(0)
        while views and not len(views[0]):
            views.pop(0)


TLS_COALESCE = 64 << 10  # smaller parts are joined before encryption: fewer, fuller TLS records


def _send_all_tls(sock: ssl.SSLSocket, views: list[memoryview], on_timeout: Callable[[], None] | None) -> None:
    """`send_all` on a TLS socket (which has no `sendmsg`): small parts are joined, big ones go as
    they are. A timed-out TLS write must be retried with the same bytes (OpenSSL has taken part
    of them), which the loop does after `on_timeout`."""
    pending = bytearray()
    chunks: list[memoryview] = []
    for view in views:
        if len(view) < TLS_COALESCE:
            pending += view
            continue
        if pending:
            chunks.append(memoryview(pending))
            pending = bytearray()
        chunks.append(view)
    if pending:
        chunks.append(memoryview(pending))
    for chunk in chunks:
        while len(chunk):
            try:
                sent = sock.send(chunk)
            except socket.timeout:
                if on_timeout is None:
                    raise
                on_timeout()
                continue
            chunk = chunk[sent:]


def can_sendfile(sock: socket.socket) -> bool:
    """Whether file bytes can go from the page cache to this socket: not through TLS, which must
    encrypt them in user space (Python's SSLSocket.sendfile would fall back to 8 KiB sends)."""
    return not isinstance(sock, ssl.SSLSocket)


def send_file_range(sock: socket.socket, file: BinaryIO, offset: int, count: int) -> None:
    """Sends file bytes straight from the page cache (no copy through Python). `socket.sendfile`
    rather than `os.sendfile`: it waits for the socket when its buffer is full (a socket with a
    timeout is non-blocking underneath)."""
    sent = sock.sendfile(file, offset, count)
    if sent != count:
        raise ChainfsError(Reason.IO_ERROR, f"chunk file ended after {sent} of {count} bytes while sending")


def tune(sock: socket.socket) -> None:
    """Large buffers and no Nagle delay: pieces of a chunk go out as soon as they are written."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        except OSError:
            pass


def send_error(sock: socket.socket, exc: ChainfsError) -> None:
    header = storage_pb2.DataError(reason=exc.reason.value, message=exc.message).SerializeToString()
    send_frame(sock, OP_ERROR, header)


def error_of(header: bytes) -> ChainfsError:
    """The ChainfsError an OP_ERROR frame carries (an unknown reason is an internal error)."""
    err = storage_pb2.DataError.FromString(header)
    try:
        reason = Reason(err.reason)
    except ValueError:
        reason = Reason.INTERNAL
    return ChainfsError(reason, err.message)


def recv_write_reply(sock: socket.socket) -> storage_pb2.WriteReply:
    """The answer to an OP_WRITE: its WriteReply, or the error it carries raised."""
    op, header_len, payload_len = recv_prefix(sock)
    header = recv_header(sock, header_len)
    if payload_len or op not in (OP_OK, OP_ERROR):
        raise ChainfsError(Reason.INTERNAL, f"unexpected data frame {op} in reply to a write")
    if op == OP_ERROR:
        raise error_of(header)
    return storage_pb2.WriteReply.FromString(header)
