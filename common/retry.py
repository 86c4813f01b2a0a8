"""Retrying calls whose failure is marked retryable in the error table, within a deadline.

The one retry loop of the project: clients (metaserver calls, chunk writes, chunk removals) and the
storage node's registration all go through `call_with_retry`; batched reads, which retry what is
left of a batch, pace themselves with the same `Backoff`. Request ids make the retried mutations
safe: every retry of one carries the same id, so servers apply it once.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from typing import Callable, TypeVar

import grpc

from chainfs.common.errors import ChainfsError, Reason, is_retryable, reason_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class RequestIds:
    """`client id:sequence` ids for mutations: every retry of one carries the same id, so servers
    apply it once. A forked child is another client, with an id of its own."""

    def __init__(self) -> None:
        self._client_id = ""
        self._pid = -1
        self._seq = itertools.count(1)

    def next(self) -> str:
        if self._pid != os.getpid():
            self._client_id, self._pid = uuid.uuid4().hex, os.getpid()
        return f"{self._client_id}:{next(self._seq)}"


class Backoff:
    """Exponential backoff with a deadline: `wait()` returns False once the deadline has passed
    (None: never) or, when given a `stop` event, once it is set."""

    def __init__(self, deadline_s: float | None, first: float = 0.02, cap: float = 0.5,
                 stop: threading.Event | None = None) -> None:
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.delay = first
        self.cap = cap
        self.stop = stop

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def wait(self) -> bool:
        left = self.remaining()
        if left <= 0:
            return False
        pause = min(self.delay, left)
        if self.stop is not None:
            if self.stop.wait(pause):
                return False
        else:
            time.sleep(pause)
        self.delay = min(self.delay * 2, self.cap)
        return True


def failure_reason(exc: BaseException) -> Reason | None:
    if isinstance(exc, ChainfsError):
        return exc.reason
    if isinstance(exc, grpc.RpcError):
        return reason_of(exc)
    return None


def call_with_retry(
    fn: Callable[[], T],
    deadline_s: float | None,
    on_retry: Callable[[Reason], None] | None = None,
    what: str = "call",
    *,
    retryable: Callable[[Reason], bool] = is_retryable,
    backoff: Backoff | None = None,
    before_retry: Callable[[], object] | None = None,
) -> T:
    """Runs fn until it succeeds, fails with a reason `retryable` refuses, or `backoff` (by default
    one over `deadline_s`) gives up; then the last failure is raised. After each retryable
    failure `on_retry(reason)` runs before the pause (a failover: the next call starts elsewhere
    even once this one gives up), and `before_retry()` after it, only when there is a retry (a
    routing refresh, as fresh as the retry needs it)."""
    if backoff is None:
        backoff = Backoff(deadline_s)
    while True:
        try:
            return fn()
        except (grpc.RpcError, ChainfsError) as exc:
            reason = failure_reason(exc)
            if reason is None or not retryable(reason):
                raise
            log.debug("%s: retryable %s, retrying", what, reason.value)
            if on_retry is not None:
                on_retry(reason)
            if not backoff.wait():
                raise
            if before_retry is not None:
                before_retry()
