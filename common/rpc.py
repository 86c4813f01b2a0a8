"""gRPC plumbing shared by servers and clients: channels, servers, handler error mapping."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from concurrent import futures
from typing import Any, Callable, NoReturn, TypeVar

import grpc

from chainfs.common import auth, tls
from chainfs.common.decoding import LenientDecoding
from chainfs.common.config import GRPC_OPTIONS, STREAMS_PER_WORKER
from chainfs.common.errors import ChainfsError, Reason, abort
from chainfs.common.files import write_atomically

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def handler(func: F) -> F:
    """Wraps a servicer method, unary or server-streaming (a generator): a ChainfsError becomes
    its status; anything else is INTERNAL."""
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from func(self, request, context)
            except Exception as exc:  # noqa: BLE001 - _fail sorts out which
                _fail(func.__name__, context, exc)

        return streaming  # type: ignore[return-value]

    @functools.wraps(func)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return func(self, request, context)
        except Exception as exc:  # noqa: BLE001 - _fail sorts out which
            _fail(func.__name__, context, exc)

    return unary  # type: ignore[return-value]


def _fail(name: str, context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """The boundary: a ChainfsError aborts with its reason; a gRPC error, or an abort the method
    made itself, goes on as it is; anything else is logged and aborts as INTERNAL (no traceback
    reaches the caller)."""
    if isinstance(exc, ChainfsError):
        abort(context, exc.reason, exc.message)
    if isinstance(exc, grpc.RpcError) or context.code() is not None:
        raise exc
    log.error("%s failed", name, exc_info=exc)
    abort(context, Reason.INTERNAL, f"{type(exc).__name__}: {exc}")


def make_server(max_workers: int = 64) -> grpc.Server:
    """A gRPC server whose every RPC is timed and counted (`common.metrics.RpcMetrics`), when the
    process has a cluster secret checked for a token (`common.auth.ServerAuth`), and whose
    unparsable requests are INVALID_ARGUMENT (`common.decoding`)."""
    from chainfs.common.metrics import RpcMetrics  # prometheus_client loads only in servers

    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[*GRPC_OPTIONS, ("grpc.max_concurrent_streams", max_workers * STREAMS_PER_WORKER)],
        maximum_concurrent_rpcs=max_workers * 4,
        # outermost first: LenientDecoding turns unparsable requests into INVALID_ARGUMENT, after
        # ServerAuth has refused callers without a token
        interceptors=[RpcMetrics(), auth.ServerAuth(), LenientDecoding()],
    )


def bind(server: grpc.Server, host: str, port: int) -> int:
    """Binds host:port (port 0 picks a free one, TLS if the process has a config) and returns the
    bound port."""
    bound = tls.add_port(server, f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return bound


class ChannelPool:
    """One channel per address per process, created lazily and rebuilt after a fork; TLS or not as
    `common.tls` says for that address, its calls carrying the token `common.auth` gives that
    address (a channel is rebuilt when either changes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channels: dict[str, tuple[grpc.Channel, grpc.Channel, tls.TlsConfig | None, str | None]] = {}

    def get(self, address: str, token: str | None = None) -> grpc.Channel:
        """The channel to `address` whose calls carry `token` (None: the one `common.auth` has for
        that address); clients with different tokens in one process get different channels."""
        with self._lock:
            if self._pid != os.getpid():
                # Channels inherited across fork must not be used (or closed) by the child.
                self._channels = {}
                self._pid = os.getpid()
            if token is None:
                token = auth.token_for(address)
            key = f"{address}|{token or ''}"
            cached = self._channels.get(key)
            if cached is None or cached[2] != tls.for_address(address) or cached[3] != token:
                raw, cfg = tls.secure_or_insecure_channel(address, GRPC_OPTIONS)
                cached = (auth.with_token(raw, token), raw, cfg, token)
                self._channels[key] = cached
            return cached[0]

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for _, raw, _, _ in self._channels.values():
                    raw.close()
            self._channels = {}


def write_port_file(path: str, port: int) -> None:
    """Publishes a server's bound port atomically (tmp + rename), once it serves."""
    write_atomically(path, f"{port}\n")

