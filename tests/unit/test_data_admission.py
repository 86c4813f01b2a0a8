"""storageserver/admission.py alone: per-client counting, release, who is not counted."""

from __future__ import annotations

import socket

from chainfs.common import auth
from chainfs.storageserver.admission import Admission


def test_each_client_gets_its_share_and_a_release_frees_a_slot() -> None:
    a = Admission(max_connections=10, max_per_client=2)
    assert a.admit("user:alice") is None and a.admit("user:alice") is None
    assert a.admit("user:alice") == 2  # refused: holds 2
    assert a.admit("user:bob") is None  # others are not affected
    a.release("user:alice")
    assert a.admit("user:alice") is None
    assert a.refused == 1


def test_client_keys() -> None:
    alice = auth.Identity("user", "alice")
    node = auth.Identity("node", "storage-0")
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert Admission.client_key(left, alice) == auth.principal(alice)
        assert Admission.client_key(left, node) is None  # nodes carry every client's forwards
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as peer:
        conn, _ = server.accept()
        with conn:
            assert Admission.client_key(conn, None) == "host:127.0.0.1"  # no tokens: by host
