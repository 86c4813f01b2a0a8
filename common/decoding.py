"""Requests whose bytes do not parse are INVALID_ARGUMENT, not INTERNAL.

gRPC's Python server answers a request its deserializer cannot parse with INTERNAL ("Exception
deserializing request!"), which tells a client the server broke when the client did. The
`LenientDecoding` interceptor (installed innermost by `common.rpc.make_server`) swaps every
method's deserializer for one that returns a `Malformed` marker instead of raising, and the method
then aborts with INVALID_ARGUMENT before its handler runs. Outer interceptors see the marker: the
token check (`common.auth.ServerAuth`) still refuses an unauthenticated call first, so bytes from
a caller without a token are never answered by what they contain.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import grpc

from chainfs.common.errors import Reason, abort


class Malformed:
    """Stands for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or anything a parser may raise
            return Malformed(f"{type(exc).__name__}: {exc}")
    return parse


def _refuse(context: grpc.ServicerContext, method: str, bad: Malformed) -> None:
    abort(context, Reason.INVALID_ARGUMENT, f"malformed {method} request: {bad.error}")


def _checked(requests: Iterator[Any], context: grpc.ServicerContext, method: str) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Malformed):
            _refuse(context, method, request)
        yield request


def handler_kind(handler: grpc.RpcMethodHandler) -> str:
    """`unary_unary`, `stream_unary`, ...: the attribute holding a handler's behaviour and the
    stem of the grpc factory that rebuilds it (every server interceptor here needs both)."""
    return (("stream" if handler.request_streaming else "unary") + "_"
            + ("stream" if handler.response_streaming else "unary"))


class LenientDecoding(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        kind = handler_kind(handler)
        behavior = getattr(handler, kind)
        if handler.request_streaming:
            def run(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return behavior(_checked(requests, context, method), context)
        else:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                if isinstance(request, Malformed):
                    _refuse(context, method, request)
                return behavior(request, context)
        return getattr(grpc, f"{kind}_rpc_method_handler")(
            run, request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer)
