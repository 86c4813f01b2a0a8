"""Pooled TCP connections to storage nodes' data services, shared by clients and forwarding nodes.

Connections use TLS where `common.tls` says so for the address (handshake at connect, so a pooled
connection is ready to use). One idle list per address per process, rebuilt after a fork (a socket inherited by a child must not
be shared with the parent). A connection goes back to the pool only after a clean request/reply
exchange; any failure closes it, so a broken or half-read stream is never reused.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from typing import Iterator

from chainfs.common import auth, tls, wire
from chainfs.common.addresses import split_address
from chainfs.common.errors import ChainfsError, Reason

MAX_IDLE_PER_ADDRESS = 32


def local_host_id() -> str:
    """This machine's identity for short-circuit reads: the kernel's boot id and the hostname
    (processes in one boot of one kernel share its page cache and its files)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


class DataConnections:
    def __init__(self, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: dict[str, list[socket.socket]] = {}

    @contextlib.contextmanager
    def connection(self, address: str, timeout: float, token: str | None = None) -> Iterator[socket.socket]:
        """A connected socket for one exchange, authenticated with `token` (None: the one
        `common.auth` has for the address); returned to the pool only if the block succeeds.
        Connections are pooled per address and token: one never serves another identity."""
        if token is None:
            token = auth.token_for(address)
        key = f"{address}|{token or ''}"
        sock = self._take(key) or self._connect(address, token)
        sock.settimeout(timeout)
        ok = False
        try:
            yield sock
            ok = True
        finally:
            if ok:
                self._give(key, sock)
            else:
                sock.close()

    def _take(self, address: str) -> socket.socket | None:
        with self._lock:
            self._check_fork()
            idle = self._idle.get(address)
            return idle.pop() if idle else None

    def _give(self, address: str, sock: socket.socket) -> None:
        with self._lock:
            self._check_fork()
            idle = self._idle.setdefault(address, [])
            if len(idle) < MAX_IDLE_PER_ADDRESS:
                idle.append(sock)
                return
        sock.close()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._idle = {}  # the parent's sockets: leave them to the parent
            self._pid = os.getpid()

    def _connect(self, address: str, token: str | None) -> socket.socket:
        try:
            host, port = split_address(address)
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except ValueError as exc:
            raise ChainfsError(Reason.INVALID_ARGUMENT, str(exc)) from exc
        except OSError as exc:
            raise ChainfsError(Reason.UNAVAILABLE, f"cannot connect to data service {address}: {exc}") from exc
        wire.tune(sock)
        try:
            sock = tls.wrap_client(sock, address, host, self.connect_timeout)
            if token:
                sock.settimeout(self.connect_timeout)
                wire.authenticate(sock, token)
            return sock
        except ChainfsError:
            sock.close()
            raise
        except ssl.SSLError as exc:
            sock.close()
            raise ChainfsError(Reason.UNAVAILABLE, f"TLS handshake with data service {address} failed: {exc}") from exc
        except OSError as exc:
            sock.close()
            raise ChainfsError(Reason.UNAVAILABLE, f"cannot connect to data service {address}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for idle in self._idle.values():
                    for sock in idle:
                        sock.close()
            self._idle = {}
