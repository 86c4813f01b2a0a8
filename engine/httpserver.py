"""The engine's HTTP server: Werkzeug's WSGI server with a bounded pool of connection threads.

Why: Werkzeug's threaded server starts a thread per connection without limit, so a client that
opens connections (or holds them open, sending nothing) costs the engine a thread each, until it
runs out. Here at most `max_threads` connections are served at once; the next ones wait in the
listen backlog (the accept loop stops accepting) for up to `queue_timeout` seconds, then get 503
in OpenAI's error shape with `Retry-After`. A connection that sends nothing for `idle_timeout`
seconds (a slow or stalled client, or an idle keep-alive) is closed and frees its thread.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

log = logging.getLogger(__name__)

DEFAULT_MAX_THREADS = 64
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_QUEUE_TIMEOUT = 10.0


class BoundedWSGIServer(BaseWSGIServer):
    """A WSGI server serving at most `max_threads` connections at once (see the module doc)."""

    multithread = True

    def __init__(self, host: str, port: int, app: Any, max_threads: int = DEFAULT_MAX_THREADS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        # HTTP/1.1 (keep-alive, chunked streams) as Werkzeug's threaded server; `timeout` is
        # socketserver's per-connection socket timeout, the idle deadline.
        handler = type("EngineRequestHandler", (WSGIRequestHandler,),
                       {"protocol_version": "HTTP/1.1", "timeout": idle_timeout or None})
        super().__init__(host, port, app, handler)
        self.max_threads = max_threads
        self.queue_timeout = queue_timeout
        self.rejected = 0
        self._busy = 0
        self._slots = threading.BoundedSemaphore(max_threads)
        self._count = threading.Lock()
        self._stopping = threading.Event()

    @property
    def busy(self) -> int:
        """Connections being served now (at most max_threads)."""
        return self._busy

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._acquire():
            self._reject(request)
            return
        with self._count:
            self._busy += 1
        threading.Thread(target=self._serve, args=(request, client_address), name="engine-http", daemon=True).start()

    def _acquire(self) -> bool:
        end = time.monotonic() + self.queue_timeout
        while not self._stopping.is_set():
            left = end - time.monotonic()
            if self._slots.acquire(timeout=max(0.0, min(0.2, left))):
                return True
            if left <= 0:
                return False
        return False

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - socketserver's own handling of a failed connection
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._count:
                self._busy -= 1
            self._slots.release()

    def _reject(self, request: socket.socket) -> None:
        """503 on the accept thread: read what the client sent (briefly), answer, close."""
        self.rejected += 1
        log.warning("engine http: all %d threads busy for %.1f s: 503", self.max_threads, self.queue_timeout)
        body = json.dumps({"error": {"message": f"server busy: all {self.max_threads} HTTP threads are in use",
                                     "type": "server_error", "param": None, "code": 503}}).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(0.05)
            try:
                request.recv(1 << 16)  # unread input would make close() send RST before the answer
            except OSError:
                pass
            request.sendall(head + body)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def shutdown(self) -> None:
        self._stopping.set()
        super().shutdown()
