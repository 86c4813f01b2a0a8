"""Process-wide thread pools of the client, each created on first use and rebuilt after a fork."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


class LazyPool:
    """A process-wide thread pool, created on first use and rebuilt after a fork.

    Work that waits on a pool must never run inside that same pool (it could starve), so each
    level of fan-out (files, then chunks) has its own.
    """

    def __init__(self, name: str, workers: int = 16) -> None:
        self.name = name
        self.workers = workers
        self._lock = threading.Lock()
        self._pid = -1
        self._pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
                self._pid = os.getpid()
            return self._pool


EXECUTOR = LazyPool("chunk-io")  # chunk reads and writes: one level of fan-out under the file level
