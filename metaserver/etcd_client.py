"""A small synchronous etcd v3 client over stubs generated from our own `proto/etcd.proto`.

Why our own and not a library: python-etcd3 breaks with protobuf >= 4; its maintained successors
are asyncio-only (aetcd, etcd3aio) while the metaserver is a threaded, synchronous gRPC server, and
etcd-client-py (a Rust binding) brings its own runtime and a second gRPC stack into a process that
already runs grpcio. The metaserver needs only KV Range/Txn, Lease grant/keep-alive/revoke and a
status probe, which is one short proto (field numbers from etcd's documented API) and this module.

Failover: every endpoint gets a channel; a call goes to the current endpoint and moves to the next
on UNAVAILABLE or a timeout. Reads are retried there until the deadline. A `Txn` is retried on
another endpoint only when the failure proves it never reached etcd (connection refused, no
leader); otherwise its outcome is unknown and the caller gets `EtcdUnavailable` (retryable for
clients; the namespace's idempotent retries and compare-guarded transactions absorb it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterable, Sequence

import grpc

from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import etcd_pb2 as epb
from chainfs.proto import etcd_pb2_grpc as egrpc

log = logging.getLogger(__name__)

OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
# Failures that prove a request was not applied: etcd refused before proposing it to raft.
_NOT_SENT = ("connect", "connection refused", "no leader", "not capable", "leader changed",
             "unhealthy", "name resolution", "dns")


class EtcdUnavailable(ChainfsError):
    """etcd could not be reached, or a write's outcome is unknown (retryable)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.UNAVAILABLE, message)


def prefix_end(key: bytes) -> bytes:
    """The first key after every key that starts with `key` (etcd's range_end for a prefix)."""
    b = bytearray(key)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def put_op(key: bytes, value: bytes, lease: int = 0) -> epb.RequestOp:
    return epb.RequestOp(request_put=epb.PutRequest(key=key, value=value, lease=lease))


def delete_op(key: bytes) -> epb.RequestOp:
    return epb.RequestOp(request_delete_range=epb.DeleteRangeRequest(key=key))


def mod_equals(key: bytes, revision: int) -> epb.Compare:
    """True while `key` was last written at `revision` (0: while it does not exist)."""
    return epb.Compare(result=epb.Compare.EQUAL, target=epb.Compare.MOD, key=key, mod_revision=revision)


def range_unchanged_since(start: bytes, end: bytes, revision: int) -> epb.Compare:
    """True while no key in [start, end) was written after `revision` (catches inserts)."""
    return epb.Compare(result=epb.Compare.LESS, target=epb.Compare.MOD, key=start, range_end=end,
                       mod_revision=revision + 1)


class EtcdClient:
    """Calls one of several etcd endpoints ("host:port"), moving on when one is unreachable."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 5.0, attempt_timeout: float = 1.0) -> None:
        endpoints = [e.strip().removeprefix("http://") for e in endpoints if e.strip()]
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = endpoints
        self.timeout = timeout
        self.attempt_timeout = min(attempt_timeout, timeout)
        self._lock = threading.Lock()
        self._channels = [grpc.insecure_channel(e, options=OPTIONS) for e in endpoints]
        self._current = 0

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _pick(self) -> tuple[int, grpc.Channel]:
        with self._lock:
            return self._current, self._channels[self._current]

    def _failed(self, index: int) -> None:
        with self._lock:
            if self._current == index:
                self._current = (index + 1) % len(self._channels)

    def _call(self, service: str, method: str, request: object, idempotent: bool) -> object:
        deadline = time.monotonic() + self.timeout
        last: grpc.RpcError | None = None
        tries = 0
        while True:
            index, channel = self._pick()
            stub = getattr(egrpc, f"{service}Stub")(channel)
            left = deadline - time.monotonic()
            # With one endpoint a read may use the whole deadline; with several, each attempt is
            # short so that a partitioned member (requests hang) is left quickly.
            per_try = left if len(self._channels) == 1 else min(left, self.attempt_timeout)
            try:
                return getattr(stub, method)(request, timeout=max(0.05, per_try))
            except grpc.RpcError as err:
                last = err
                code = err.code()
                details = (err.details() or "").lower()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise ChainfsError(Reason.INTERNAL, f"etcd {method}: {code.name}: {err.details()}") from None
                self._failed(index)
                tries += 1
                sent = not (code == grpc.StatusCode.UNAVAILABLE and any(s in details for s in _NOT_SENT))
                if (sent and not idempotent) or time.monotonic() >= deadline:
                    break
                if tries % len(self._channels) == 0:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        assert last is not None
        raise EtcdUnavailable(f"etcd {method} at {self.endpoints}: {last.code().name}: {last.details()}")

    # ---- KV ----

    def range(self, key: bytes, range_end: bytes = b"", revision: int = 0, limit: int = 0,
              keys_only: bool = False, serializable: bool = False) -> epb.RangeResponse:
        req = epb.RangeRequest(key=key, range_end=range_end, revision=revision, limit=limit,
                               keys_only=keys_only, serializable=serializable)
        try:
            return self._call("KV", "Range", req, idempotent=True)  # type: ignore[return-value]
        except ChainfsError as exc:
            # A member behind the pinned revision (we moved to it after a failure) cannot serve it
            # locally: ask the cluster instead.
            if not serializable or "future revision" not in exc.message:
                raise
            req.serializable = False
            return self._call("KV", "Range", req, idempotent=True)  # type: ignore[return-value]

    def get(self, key: bytes) -> epb.KeyValue | None:
        resp = self.range(key)
        return resp.kvs[0] if resp.kvs else None

    def txn(self, compare: Iterable[epb.Compare], success: Iterable[epb.RequestOp],
            failure: Iterable[epb.RequestOp] = (), read_only: bool = False) -> epb.TxnResponse:
        """One etcd Txn; `read_only` (Range ops only) may be sent again after an unclear failure."""
        req = epb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return self._call("KV", "Txn", req, idempotent=read_only)  # type: ignore[return-value]

    def put(self, key: bytes, value: bytes, lease: int = 0) -> epb.PutResponse:
        req = epb.PutRequest(key=key, value=value, lease=lease)
        return self._call("KV", "Put", req, idempotent=True)  # type: ignore[return-value]

    def delete(self, key: bytes, range_end: bytes = b"") -> epb.DeleteRangeResponse:
        req = epb.DeleteRangeRequest(key=key, range_end=range_end)
        return self._call("KV", "DeleteRange", req, idempotent=True)  # type: ignore[return-value]

    # ---- leases ----

    def grant(self, ttl_s: int) -> int:
        resp = self._call("Lease", "LeaseGrant", epb.LeaseGrantRequest(TTL=max(1, int(ttl_s))), idempotent=True)
        if resp.error:  # type: ignore[attr-defined]
            raise ChainfsError(Reason.INTERNAL, f"etcd lease grant: {resp.error}")  # type: ignore[attr-defined]
        return resp.ID  # type: ignore[attr-defined,no-any-return]

    def keep_alive(self, lease_id: int, within: float | None = None) -> int:
        """Renews a lease once, trying endpoints in turn for up to `within` seconds; returns its new
        TTL in seconds (0: the lease is gone). A short `within` keeps a leader from losing its lease
        while it waits on one member that stopped answering."""
        within = self.timeout if within is None else within
        deadline = time.monotonic() + within
        per_try_cap = min(self.attempt_timeout, max(0.15, within / len(self._channels)))
        while True:
            index, channel = self._pick()
            stub = egrpc.LeaseStub(channel)
            per_try = max(0.05, min(deadline - time.monotonic(), per_try_cap))
            try:
                for resp in stub.LeaseKeepAlive(iter([epb.LeaseKeepAliveRequest(ID=lease_id)]), timeout=per_try):
                    return int(resp.TTL)
                return 0
            except grpc.RpcError as err:
                self._failed(index)
                if time.monotonic() >= deadline:
                    raise EtcdUnavailable(f"etcd keep-alive at {self.endpoints}: {err.code().name}") from None

    def revoke(self, lease_id: int) -> None:
        try:
            self._call("Lease", "LeaseRevoke", epb.LeaseRevokeRequest(ID=lease_id), idempotent=True)
        except ChainfsError as exc:
            log.info("etcd lease %x not revoked (%s); it will expire", lease_id, exc.message)

    # ---- members ----

    def status(self, endpoint_index: int, timeout: float = 1.0) -> epb.StatusResponse:
        """One member's own view (raises grpc.RpcError when it does not answer)."""
        stub = egrpc.MaintenanceStub(self._channels[endpoint_index])
        return stub.Status(epb.StatusRequest(), timeout=timeout)
