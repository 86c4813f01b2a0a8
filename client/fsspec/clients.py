"""The fsspec filesystem's clients: one ChainClient per cluster and process.

fsspec caches one filesystem instance per thread (per greenlet under gevent), so instances must be
cheap: they hold only their storage options, and every instance of the same cluster in a process
shares one ChainClient (and through it one gRPC channel per server), rebuilt after a fork.
"""

from __future__ import annotations

import os
import threading

from chainfs.common import config

from chainfs.client.files.chainclient import ChainClient

PROTOCOL = "chainfs"

_lock = threading.Lock()
_clients: dict[tuple[str, float, float, bool, str | bool | None, str | None], ChainClient] = {}
_clients_pid = os.getpid()


def shared_client(address: str, retry_deadline: float, meta_timeout: float = config.META_RPC_TIMEOUT,
                  short_circuit: bool = True, tls: str | bool | None = None,
                  token: str | None = None) -> ChainClient:
    """The process-wide client of one cluster: shared by every instance and greenlet."""
    global _clients, _clients_pid
    with _lock:
        if _clients_pid != os.getpid():  # a forked child must not reuse its parent's objects
            _clients, _clients_pid = {}, os.getpid()
        key = (address, retry_deadline, meta_timeout, short_circuit, tls, token)
        client = _clients.get(key)
        if client is None:
            client = ChainClient(address, meta_timeout=meta_timeout, retry_deadline=retry_deadline,
                                 short_circuit=short_circuit, tls=tls, token=token)
            _clients[key] = client
        return client
