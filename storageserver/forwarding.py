"""Sending an update to this node's successor in a chain, over the lean TCP path or gRPC.

Two shapes: a cut-through stream (the header goes out before the data has arrived here, then each
piece as it arrives) and a whole send of content already held. The TCP path is used when the
routing table names the successor's data address; gRPC otherwise (and for removals).

A successor that hangs (paused) is replaced by the cluster manager; heartbeats bring the new
routing within an interval, so every wait here watches `still_current` and gives up with
`Rerouted` once the chain has moved on, instead of blocking until the deadline.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable

import grpc

from chainfs.common import wire
from chainfs.common.dataconn import DataConnections
from chainfs.common.errors import ChainfsError, Reason, reason_of
from chainfs.common.rpc import ChannelPool
from chainfs.common.streams import write_requests
from chainfs.proto import storage_pb2, storage_pb2_grpc
from chainfs.storageserver.routing import ChainPosition

log = logging.getLogger(__name__)

POLL = 0.1  # how often a blocked forward looks at the routing table

# Failures of a successor that are passed to the client as they are (retrying will not help).
_PASS_THROUGH = {Reason.NO_SPACE, Reason.TOO_LARGE, Reason.IO_ERROR, Reason.INVALID_ARGUMENT}


class Rerouted(Exception):
    """The chain version moved while a forward was in flight: forward again to the new successor."""


def successor_error(pos: ChainPosition, reason: Reason, details: str) -> ChainfsError:
    """What a successor's failure means for this hop's caller."""
    log.warning("chain %d: forwarding to target %d at %s failed: %s: %s",
                pos.chain_id, pos.successor, pos.successor_address, reason.value, details)
    if reason in _PASS_THROUGH:
        mapped = reason
    elif reason in (Reason.STALE_ROUTING, Reason.NOT_SERVING):
        mapped = Reason.STALE_ROUTING
    else:
        mapped = Reason.UNAVAILABLE
    return ChainfsError(mapped, f"successor target {pos.successor} failed: {reason.value}: {details}")


class CutThrough:
    """An open forward on one pooled connection: `send` pieces, then `finish` for the reply.

    A failed send only marks the stream broken (the caller still has to take in its own data);
    `finish` then raises, and the caller falls back to sending the whole content again.
    """

    def __init__(self, conns: DataConnections, pos: ChainPosition, header: storage_pb2.WriteHeader,
                 deadline: float, still_current: Callable[[], bool]) -> None:
        self.pos = pos
        self.deadline = deadline
        self.still_current = still_current
        self.error: BaseException | None = None
        self._ctx = conns.connection(pos.successor_data_address, POLL)
        self._sock: socket.socket | None = None
        try:
            self._sock = self._ctx.__enter__()
            raw = header.SerializeToString()
            self._send([wire.pack_prefix(wire.OP_WRITE, len(raw), header.length), raw])
        except BaseException as exc:  # noqa: BLE001 - recorded, raised by finish()
            self._fail(exc)

    @property
    def broken(self) -> bool:
        return self.error is not None

    def send(self, piece: memoryview) -> None:
        if self.error is None:
            try:
                self._send([piece])
            except BaseException as exc:  # noqa: BLE001
                self._fail(exc)

    def finish(self) -> storage_pb2.WriteReply:
        if self.error is not None:
            raise self._mapped(self.error)
        assert self._sock is not None
        try:
            while True:
                try:
                    reply = wire.recv_write_reply(self._sock)
                    break
                except socket.timeout:
                    self._check_waiting()
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
            raise self._mapped(exc) from None
        self._ctx.__exit__(None, None, None)
        self._sock = None
        return reply

    def abort(self) -> None:
        """Drops the connection mid-frame: the successor discards the partial update."""
        if self.error is None:
            self._fail(ChainfsError(Reason.UNAVAILABLE, "forward aborted"))

    def _send(self, parts: list) -> None:
        assert self._sock is not None
        wire.send_all(self._sock, parts, on_timeout=self._check_waiting)

    def _check_waiting(self) -> None:
        if not self.still_current():
            raise Rerouted()
        if time.monotonic() >= self.deadline:
            raise ChainfsError(Reason.TIMEOUT, f"successor target {self.pos.successor} did not answer in time")

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        if self._sock is not None:
            self._sock = None
            try:
                self._ctx.__exit__(type(exc), exc, None)  # closes: never reused
            except BaseException:  # noqa: BLE001 - the context re-raises what it was given
                pass

    def _mapped(self, exc: BaseException) -> BaseException:
        if isinstance(exc, Rerouted):
            return exc
        if isinstance(exc, ChainfsError):
            if exc.reason == Reason.TIMEOUT:
                return exc
            return successor_error(self.pos, exc.reason, exc.message)
        return successor_error(self.pos, Reason.UNAVAILABLE, f"{type(exc).__name__}: {exc}")


class Successor:
    """The ways an update reaches the next node of a chain."""

    def __init__(self, channels: ChannelPool, conns: DataConnections, message_bytes: int) -> None:
        self.channels = channels
        self.conns = conns
        self.message_bytes = message_bytes

    def open_stream(self, pos: ChainPosition, header: storage_pb2.WriteHeader, deadline: float,
                    still_current: Callable[[], bool]) -> CutThrough | None:
        """A cut-through forward, or None when the successor has no data address (gRPC only)."""
        if not pos.successor_data_address:
            return None
        return CutThrough(self.conns, pos, header, deadline, still_current)

    def send_whole(self, pos: ChainPosition, header: storage_pb2.WriteHeader, content: memoryview,
                   deadline: float, still_current: Callable[[], bool]) -> storage_pb2.WriteReply:
        if pos.successor_data_address:
            stream = CutThrough(self.conns, pos, header, deadline, still_current)
            for at in range(0, len(content), wire.SEND_PIECE):
                stream.send(content[at:at + wire.SEND_PIECE])
            return stream.finish()
        return self._send_grpc(pos, header, content, deadline, still_current)

    def _send_grpc(self, pos: ChainPosition, header: storage_pb2.WriteHeader, content: memoryview,
                   deadline: float, still_current: Callable[[], bool]) -> storage_pb2.WriteReply:
        call = self.stub(pos).Write.future(write_requests(header, content, self.message_bytes),
                                           timeout=max(0.01, deadline - time.monotonic()))
        while True:
            try:
                return call.result(timeout=POLL)
            except grpc.FutureTimeoutError:
                if not still_current():
                    call.cancel()
                    raise Rerouted() from None
            except grpc.FutureCancelledError:
                raise Rerouted() from None
            except grpc.RpcError as err:
                raise self.grpc_error(pos, err) from None

    def stub(self, pos: ChainPosition) -> storage_pb2_grpc.StorageStub:
        if not pos.successor_address:
            raise ChainfsError(Reason.UNAVAILABLE, f"no address for successor target {pos.successor}")
        return storage_pb2_grpc.StorageStub(self.channels.get(pos.successor_address))

    @staticmethod
    def grpc_error(pos: ChainPosition, err: grpc.RpcError) -> ChainfsError:
        details = err.details() if hasattr(err, "details") else str(err)
        return successor_error(pos, reason_of(err), details or "")
