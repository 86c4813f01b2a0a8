"""Counts the metadata RPCs a client really sends (a gRPC client interceptor on the metaserver channel).

Tests use it to check that batched operations cost one round trip however many files they touch.
"""

from __future__ import annotations

import collections
import threading
from typing import Iterator

import grpc
import pytest

from chainfs.client.rpc import meta_client


class _Counter(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001
        with self._lock:
            self.calls[client_call_details.method.rsplit("/", 1)[-1]] += 1
        return continuation(client_call_details, request)

    def namespace_calls(self) -> dict[str, int]:
        """Namespace RPCs only (routing refreshes are not per-file metadata)."""
        with self._lock:
            return {m: n for m, n in self.calls.items() if m != "GetRouting"}

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()


class _CountingPool:
    def __init__(self, pool: meta_client.ChannelPool, counter: _Counter) -> None:
        self._pool, self._counter = pool, counter
        self._wrapped: dict[int, grpc.Channel] = {}

    def get(self, address: str, token: str | None = None) -> grpc.Channel:
        channel = self._pool.get(address, token)
        wrapped = self._wrapped.get(id(channel))
        if wrapped is None:
            wrapped = self._wrapped[id(channel)] = grpc.intercept_channel(channel, self._counter)
        return wrapped


@pytest.fixture()
def meta_rpcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Counter]:
    counter = _Counter()
    monkeypatch.setattr(meta_client, "CHANNELS", _CountingPool(meta_client.CHANNELS, counter))
    yield counter
