"""common.stall.guard: only the wait for a client stream's next message counts toward its deadline."""

from __future__ import annotations

import threading
import time

from chainfs.common import stall


class FakeContext:
    """The one ServicerContext method guard uses."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_a_slow_handler_is_not_the_clients_stall() -> None:
    ctx = FakeContext()
    got = []
    for msg in stall.guard(iter(range(3)), ctx, timeout=0.2):
        got.append(msg)
        time.sleep(0.4)  # the handler's own work on a message, twice the deadline
    assert got == [0, 1, 2] and not ctx.cancelled.is_set()


def test_a_silent_client_is_cancelled_and_the_guard_lets_go() -> None:
    ctx = FakeContext()
    release = threading.Event()

    def silent():
        yield "header"
        release.wait(30)  # what gRPC's iterator does until the cancel (here: until released)

    started = time.monotonic()
    stream = stall.guard(silent(), ctx, timeout=0.2)
    assert next(stream) == "header"
    waiter = threading.Thread(target=lambda: list(stream), daemon=True)
    waiter.start()
    assert ctx.cancelled.wait(10), "a silent stream was never cancelled"
    assert time.monotonic() - started >= 0.2
    release.set()
    waiter.join(10)
    assert not stall._REAPER._streams, "a finished stream is still watched"
