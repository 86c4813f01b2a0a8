"""Which data connections a storage node serves (docs/security.md, "Tenants and limits").

A node serves at most `max_connections` data connections (a thread each) and one client at most
`max_per_client` of them, so no client can take every slot. A client is the holder of a user
token (its kind and name), or on a cluster without tokens the peer's host; storage nodes are not
counted, as they carry every client's forwards. Refusals are counted in
`chainfs_data_connections_dropped_total{reason}` and logged at most every 10 s.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time

from chainfs.common import auth, config
from chainfs.storageserver.metrics import record_data_drop

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, max_connections: int | None = None, max_per_client: int | None = None) -> None:
        self.max_connections = config.DATA_MAX_CONNECTIONS if max_connections is None else max_connections
        self.max_per_client = config.DATA_MAX_PER_CLIENT if max_per_client is None else max_per_client
        self.refused = 0
        self._held: dict[str, int] = {}  # open connections per client (client_key)
        self._mu = threading.Lock()
        self._logged = -math.inf

    @staticmethod
    def client_key(conn: socket.socket, ident: auth.Identity | None) -> str | None:
        """Whose connection this is: the token's principal, or without tokens the peer's host;
        None for storage nodes (not counted)."""
        if ident is not None:
            return None if ident.is_node else auth.principal(ident)
        try:
            return "host:" + str(conn.getpeername()[0])
        except OSError:
            return None

    def admit(self, client: str) -> int | None:
        """Counts a connection of `client`; None when admitted, else how many it holds already
        (the refusal is counted)."""
        with self._mu:
            held = self._held.get(client, 0)
            if held < self.max_per_client:
                self._held[client] = held + 1
                return None
        self.note_refusal("per_client", f"data connection of {client} refused: it holds {held} already")
        return held

    def release(self, client: str) -> None:
        """One admitted connection of `client` closed."""
        with self._mu:
            held = self._held.get(client, 0) - 1
            if held > 0:
                self._held[client] = held
            else:
                self._held.pop(client, None)

    def note_refusal(self, reason: str, what: str) -> None:
        """Counts a refused connection; logs at most every 10 s (a flood must not flood the log)."""
        self.refused += 1
        record_data_drop(reason)
        now = time.monotonic()
        if now - self._logged >= 10.0:
            self._logged = now
            log.warning("%s (%d refused so far)", what, self.refused)
