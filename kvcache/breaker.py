"""A circuit breaker for the KV block store's backend: fail fast while the metadata service is away.

Why: a cache is only worth asking while it answers quickly. When the store's backend (the chainfs
metaserver) is unreachable, every call would wait out its retry deadline, and an engine holding its
lock through lookup and store would stall each request by that much. After one connectivity failure
(ConnectionError, TimeoutError: what chainfs raises when the service is away) the breaker opens:
calls are refused at once (`allow()` is False; the store counts them as unavailable and the engine
recomputes), and a background thread probes the backend every `probe_interval` seconds. The first
probe that succeeds closes the breaker, so the cache is used again within one interval of the
service's return. Other errors (a missing file, a corrupt block, a bad path) say nothing about
reachability and leave the breaker closed.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

# ConnectionError errnos that mean "the service is not there": chainfs maps an unreachable
# metaserver to ECONNREFUSED, and chains that stay unavailable past the retry deadline (storage
# nodes fenced while the metaserver is away) to EAGAIN. EBUSY (an overloaded node) does not count.
_UNREACHABLE_ERRNOS = {None, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                       errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}


class StoreUnavailable(ConnectionError):
    """Raised instead of calling the backend while the breaker is open."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.ECONNREFUSED, f"{name} is unreachable (circuit open; retried in the background)")


def is_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, ConnectionError) and exc.errno in _UNREACHABLE_ERRNOS


class CircuitBreaker:
    """Closed (calls pass) or open (calls refused, a daemon thread probes until one succeeds)."""

    def __init__(self, probe: Callable[[], object], probe_interval: float = 1.0, name: str = "backend") -> None:
        self.probe = probe
        self.probe_interval = probe_interval
        self.name = name
        self.trips = 0
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def allow(self) -> bool:
        return not self._open.is_set()

    def failed(self, exc: BaseException) -> bool:
        """Reports a backend failure; opens the breaker when it means the backend is unreachable."""
        if not is_unreachable(exc):
            return False
        with self._lock:
            if self._open.is_set() or self._stop.is_set():
                return True
            self._open.set()
            self.trips += 1
            log.warning("%s unreachable (%s: %s): failing fast, probing every %.1f s",
                        self.name, type(exc).__name__, exc, self.probe_interval)
            self._thread = threading.Thread(target=self._probe_loop, name=f"breaker-{self.name}", daemon=True)
            self._thread.start()
        return True

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.probe_interval):
            try:
                self.probe()
            except Exception as exc:  # noqa: BLE001 - any failure keeps it open; only reachability closes it
                if not is_unreachable(exc):
                    log.debug("%s probe: %s (reachable)", self.name, exc)
                else:
                    continue
            with self._lock:
                self._open.clear()
            log.info("%s reachable again: using it", self.name)
            return

    def close(self) -> None:
        """Stops probing (the store is being dropped)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.probe_interval + 1)


class GuardedBackend:
    """A block-store backend behind a breaker: its batched calls (`stat_many`, `read_many`,
    `write_many`, `remove_many`, ...) raise StoreUnavailable at once while the breaker is open, and
    an unreachable failure, raised or returned for an item, opens it."""

    def __init__(self, inner: Any, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not self.breaker.allow():
                raise StoreUnavailable(self.breaker.name)
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                self.breaker.failed(exc)
                raise
            items = result.values() if isinstance(result, dict) else result if isinstance(result, list) else ()
            failure = next((r for r in items if isinstance(r, Exception) and is_unreachable(r)), None)
            if failure is not None:
                self.breaker.failed(failure)
            return result

        return guarded
