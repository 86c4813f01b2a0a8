"""The servers' background loops (election, garbage collection, resync, heartbeats, scrub, the
chain monitor) start and end one way: a named daemon thread running the owner's loop, which waits
on `stopping` between passes, so `stop()` ends it within one wait and joins it (bounded)."""

from __future__ import annotations

import threading
from typing import Callable


class LoopThread:
    """`loop` on a daemon thread named `name`, from `start()` until `stop()`; `stopping` is what
    the loop waits on (`while not stopping.wait(interval): ...`)."""

    def __init__(self, name: str, loop: Callable[[], None], join_timeout: float = 5.0) -> None:
        self.name = name
        self.join_timeout = join_timeout
        self.stopping = threading.Event()
        self._loop = loop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the thread (a second call while it runs does nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Tells the loop to end and waits for it, at most `join_timeout` seconds."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)
            self._thread = None
