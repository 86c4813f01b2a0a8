"""The client's side of the lean data path: chunk writes and reads over TCP, short-circuit reads.

Bytes go from the caller's buffer to the socket (`sendmsg` of memoryviews) and from the socket
into the caller's buffer (`recv_into`), never through protobuf or an intermediate join. A client on
the same machine as a serving replica reads the committed chunk file itself through a descriptor
the node hands over its Unix socket (SCM_RIGHTS), after the node has applied every read rule.
Whatever is received is checked by the caller (StorageClient) against its CRC32C.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Iterator, Sequence

from chainfs.common import wire
from chainfs.common.checksum import blocks_match, covering_blocks, crc32c
from chainfs.common.dataconn import DataConnections
from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import storage_pb2 as spb

log = logging.getLogger(__name__)

CONNECTIONS = DataConnections()
MAX_LOCAL_ITEMS = 250  # matches the node's limit of descriptors per message
RECV_BUFFER = 256 << 10


def _transport_error(exc: BaseException, address: str) -> ChainfsError:
    if isinstance(exc, ChainfsError):
        return exc
    if isinstance(exc, socket.timeout):
        return ChainfsError(Reason.TIMEOUT, f"data service {address} did not answer in time")
    return ChainfsError(Reason.UNAVAILABLE, f"data service {address}: {type(exc).__name__}: {exc}")


def write_chunk(address: str, header: spb.WriteHeader, data: bytes | bytearray | memoryview,
                timeout: float, token: str | None = None) -> spb.WriteReply:
    """One OP_WRITE: the header and the caller's bytes in one gathered send, then the reply."""
    try:
        with CONNECTIONS.connection(address, timeout, token) as sock:
            raw = header.SerializeToString()
            wire.send_all(sock, [wire.pack_prefix(wire.OP_WRITE, len(raw), len(data)), raw, data])
            return wire.recv_write_reply(sock)
    except (OSError, ChainfsError) as exc:
        raise _transport_error(exc, address) from None


def read_items(address: str, items: Sequence[spb.ReadItem], views: Sequence[memoryview],
               timeout: float, token: str | None = None,
               capabilities: Sequence[str] = ()) -> Iterator[tuple[int, spb.ReadItemHeader]]:
    """One OP_READ for a batch: yields (position, header) with the bytes already in views[position].

    A reply longer than its view (never sent by a correct node) is reported as CHECKSUM_MISMATCH.
    """
    try:
        with CONNECTIONS.connection(address, timeout, token) as sock:
            raw = spb.ReadRequest(items=items, capabilities=capabilities).SerializeToString()
            wire.send_frame(sock, wire.OP_READ, raw)
            # Small items arrive many to a segment: a buffered reader takes them in a few large
            # recvs (and copies each out), large payloads still go straight into their views. The
            # reply ends exactly at its last item, so nothing is left buffered for the next user.
            with sock.makefile("rb", buffering=RECV_BUFFER) as stream:
                for _ in items:
                    op, header_len, payload_len = wire.read_prefix(stream)
                    header_raw = wire.read_exact(stream, bytearray(header_len))
                    if op == wire.OP_ERROR:
                        raise wire.error_of(bytes(header_raw))
                    if op != wire.OP_ITEM:
                        raise ChainfsError(Reason.INTERNAL, f"unexpected data frame {op} in a read reply")
                    header = spb.ReadItemHeader.FromString(bytes(header_raw))
                    if header.item >= len(items):
                        raise ChainfsError(Reason.INTERNAL, f"reply for item {header.item} of {len(items)}")
                    view = views[header.item]
                    if payload_len > len(view) or payload_len != header.length:
                        wire.read_exact(stream, bytearray(payload_len))
                        header.status = spb.CHECKSUM_MISMATCH
                    else:
                        wire.read_exact(stream, view[:payload_len])
                    yield header.item, header
    except (OSError, ChainfsError) as exc:
        raise _transport_error(exc, address) from None


def open_local(socket_path: str, items: Sequence[spb.ReadItem], timeout: float,
               capabilities: Sequence[str] = ()) -> tuple[list[spb.ReadItemHeader], list[int]]:
    """Asks the node on this machine for its committed chunk files: headers, and the descriptors
    of the OK items in order (the caller closes them)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        wire.send_frame(sock, wire.OP_OPEN_LOCAL,
                        spb.ReadRequest(items=items, capabilities=capabilities).SerializeToString())
        first, fds, _flags, _addr = socket.recv_fds(sock, wire.PREFIX.size, MAX_LOCAL_ITEMS)
        try:
            prefix = bytearray(first)
            if len(prefix) < wire.PREFIX.size:
                rest = bytearray(wire.PREFIX.size - len(prefix))
                wire.recv_exact(sock, memoryview(rest))
                prefix += rest
            magic, op, _f, _r, header_len, _payload = wire.PREFIX.unpack(prefix)
            if magic != wire.MAGIC:
                raise ChainfsError(Reason.INTERNAL, "not a chainfs data frame")
            header_raw = wire.recv_header(sock, header_len)
            if op == wire.OP_ERROR:
                raise wire.error_of(header_raw)
            reply = spb.LocalOpenReply.FromString(header_raw)
            ok = sum(1 for h in reply.items if h.status == spb.OK)
            if len(reply.items) != len(items) or ok != len(fds):
                raise ChainfsError(Reason.INTERNAL, "short-circuit reply does not match the request")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return list(reply.items), fds


def read_local_item(fd: int, header: spb.ReadItemHeader, item: spb.ReadItem, view: memoryview) -> bool:
    """Reads one item from a committed chunk file handed over by the node; True when the bytes in
    view are verified: the blocks covering the range match their stored CRC32Cs (the whole chunk
    its CRC, for chunks stored without block CRCs) and the file is still linked (the version read
    is still the committed one). False means: read it over the network instead."""
    meta = header.meta
    start = min(item.offset, meta.length)
    length = header.length
    if meta.block_crcs:
        lo, hi = covering_blocks(start, length, meta.length)
    else:
        lo, hi = 0, meta.length
    direct = lo == start and hi == start + length
    covering = view[:length] if direct else memoryview(bytearray(hi - lo))
    try:
        got = 0
        while got < len(covering):
            n = os.preadv(fd, [covering[got:]], lo + got)
            if n == 0:
                return False
            got += n
        good = blocks_match(covering, lo, meta.block_crcs) if meta.block_crcs else crc32c(covering) == meta.crc
        if not good or os.fstat(fd).st_nlink == 0:
            return False
    except OSError as exc:
        log.debug("short-circuit read failed: %s", exc)
        return False
    if not direct:
        view[:length] = covering[start - lo:start - lo + length]
    return True
