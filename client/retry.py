"""Retrying calls whose failure is marked retryable in the error table, within a deadline."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

import grpc

from chainfs.common.errors import ChainfsError, Reason, is_retryable, reason_of

log = logging.getLogger(__name__)
T = TypeVar("T")


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
