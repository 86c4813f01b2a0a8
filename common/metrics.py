"""Prometheus metrics shared by the servers: per-RPC latency and errors, and the /metrics endpoint.

Every server process serves `GET /metrics` on a port of its own (`--metrics-port`, 0 picks a free
one, -1 turns it off), bound to the server's host. What a process records through module-level
hooks (the RPC interceptor here, `storageserver.metrics.record_io`) lives in `PROCESS`, one registry
per process; each server adds collectors that read its own state at scrape time.

| metric | kind | labels |
| --- | --- | --- |
| `chainfs_rpc_duration_seconds` | histogram | service, method (a streaming call: until its last message) |
| `chainfs_rpc_requests_total` | counter | service, method, code (gRPC status name) |
| `chainfs_rpc_errors_total` | counter | service, method, reason (the `chainfs-reason` of `common/errors.py`) |
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from chainfs.common.decoding import handler_kind
from chainfs.common.errors import REASON_KEY, RULES, Reason

log = logging.getLogger(__name__)

disable_created_metrics()  # no `_created` series: they double every scrape and nothing reads them

PROCESS = CollectorRegistry(auto_describe=True)
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_RPC_SECONDS = Histogram("chainfs_rpc_duration_seconds", "server-side duration of an RPC",
                         ["service", "method"], buckets=RPC_BUCKETS, registry=PROCESS)
_RPC_TOTAL = Counter("chainfs_rpc_requests", "RPCs served, by status", ["service", "method", "code"],
                     registry=PROCESS)
_RPC_ERRORS = Counter("chainfs_rpc_errors", "RPCs that failed, by chainfs reason", ["service", "method", "reason"],
                      registry=PROCESS)


class RpcMetrics(grpc.ServerInterceptor):
    """Times every RPC and counts it by status and failure reason; pass to `common.rpc.make_server`."""

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        service = service.rpartition(".")[2] or service
        kind = handler_kind(handler)
        behavior = getattr(handler, kind)
        streams_out = handler.response_streaming

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            if streams_out:
                return _timed_stream(behavior(request, context), context, service, method, start)
            try:
                reply = behavior(request, context)
            except BaseException:
                _finish(context, service, method, start, failed=True)
                raise
            _finish(context, service, method, start)
            return reply

        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(timed, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def _timed_stream(replies: Iterable[Any], context: grpc.ServicerContext, service: str, method: str,
                  start: float) -> Iterator[Any]:
    failed = True
    try:
        yield from replies
        failed = False
    finally:
        _finish(context, service, method, start, failed=failed)


def _finish(context: grpc.ServicerContext, service: str, method: str, start: float, failed: bool = False) -> None:
    _RPC_SECONDS.labels(service, method).observe(time.perf_counter() - start)
    code = context.code()
    if code is None:
        code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    _RPC_TOTAL.labels(service, method, code.name).inc()
    if code != grpc.StatusCode.OK:
        reason = dict(context.trailing_metadata() or ()).get(REASON_KEY) or code.name.lower()
        _RPC_ERRORS.labels(service, method, str(reason)).inc()


def record_request(service: str, method: str, seconds: float, reason: Reason | None = None) -> None:
    """Counts a request served outside gRPC (the TCP data path) under the same RPC metrics, so a
    chunk write is a `Write` whichever transport carried it."""
    _RPC_SECONDS.labels(service, method).observe(seconds)
    code = grpc.StatusCode.OK if reason is None else RULES[reason].code
    _RPC_TOTAL.labels(service, method, code.name).inc()
    if reason is not None:
        _RPC_ERRORS.labels(service, method, reason.value).inc()


class _Forward(Collector):
    """Exposes another registry's metrics (the process-wide hooks) in a server's registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        yield from self.source.collect()


def server_registry(*collectors: Collector) -> CollectorRegistry:
    """A server's registry: the process-wide hooks, process CPU/memory/fds, and its own collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(PROCESS))
    ProcessCollector(namespace="chainfs", registry=registry)
    for c in collectors:
        registry.register(c)
    return registry


class MetricsEndpoint:
    """`GET /metrics` over HTTP on its own port, in a daemon thread; `stop()` closes it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int = 0) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port = int(self._server.server_port)
        log.info("metrics at http://%s:%d/metrics", host, self.port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_endpoint(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint | None:
    """The endpoint, or None when `port` is negative (metrics turned off)."""
    return None if port < 0 else MetricsEndpoint(registry, host, port)


class Ttl:
    """Caches an expensive reading (a scan of a store) for `seconds`, so frequent scrapes stay cheap."""

    def __init__(self, read: Callable[[], Any], seconds: float = 2.0) -> None:
        self.read, self.seconds = read, seconds
        self._value: Any = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self.seconds:
                self._value, self._at = self.read(), time.monotonic()
            return self._value
