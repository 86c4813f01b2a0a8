"""A deadline between the messages of a gRPC client stream (docs/security.md, "Tenants and limits").

Why: gRPC's deadline is the caller's to set, and a handler blocked in `next(request_iterator)`
waits for as long as the client keeps the stream open, holding one of the server's few worker
threads. `guard` counts only the time spent waiting for the next message (not the handler's own
work on the previous one) and cancels the RPC when it passes the limit; the blocked `next` then
raises and the worker is free. One reaper thread per process watches every guarded stream.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from typing import Any, Iterable, Iterator, TypeVar

import grpc

log = logging.getLogger(__name__)
T = TypeVar("T")
_TICK = 0.1  # seconds between the reaper's looks: a stalled stream is dropped within timeout + this


class _Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, list[Any]] = {}  # id -> [deadline, context, timeout]
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, context: grpc.ServicerContext, timeout: float) -> list[Any]:
        with self._lock:
            entry = [math.inf, context, timeout, next(self._ids)]
            self._streams[entry[3]] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stream-stall", daemon=True)
                self._thread.start()
        return entry

    def remove(self, entry: list[Any]) -> None:
        with self._lock:
            self._streams.pop(entry[3], None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK)
            now = time.monotonic()
            with self._lock:
                late = [e for e in self._streams.values() if e[0] <= now]
                for e in late:
                    self._streams.pop(e[3], None)
            for _deadline, context, timeout, _id in late:
                log.info("write stream dropped: no message for %.1f s", timeout)
                context.cancel()


_REAPER = _Reaper()


def guard(requests: Iterable[T], context: grpc.ServicerContext, timeout: float) -> Iterator[T]:
    """The stream's messages; the RPC is cancelled if the client takes over `timeout` s to send the next."""
    it = iter(requests)
    entry = _REAPER.add(context, timeout)
    try:
        while True:
            entry[0] = time.monotonic() + timeout
            try:
                msg = next(it)
            except StopIteration:
                return
            finally:
                entry[0] = math.inf  # the handler's own work on a message is not the client's stall
            yield msg
    finally:
        _REAPER.remove(entry)
