"""Retrying calls whose failure is marked retryable in the error table, within a deadline."""

from __future__ import annotations

import itertools
import logging
import os
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
    """Exponential backoff with a deadline: `wait()` returns False once the deadline has passed."""

    def __init__(self, deadline_s: float, first: float = 0.02, cap: float = 0.5) -> None:
        self.deadline = time.monotonic() + deadline_s
        self.delay = first
        self.cap = cap

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def wait(self) -> bool:
        left = self.remaining()
        if left <= 0:
            return False
        time.sleep(min(self.delay, left))
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
    deadline_s: float,
    on_retry: Callable[[Reason], None] | None = None,
    what: str = "call",
) -> T:
    """Runs fn until it succeeds, fails with a non-retryable reason, or the deadline passes."""
    backoff = Backoff(deadline_s)
    while True:
        try:
            return fn()
        except (grpc.RpcError, ChainfsError) as exc:
            reason = failure_reason(exc)
            if reason is None or not is_retryable(reason):
                raise
            log.debug("%s: retryable %s, retrying", what, reason.value)
            if on_retry is not None:
                on_retry(reason)
            if not backoff.wait():
                raise
