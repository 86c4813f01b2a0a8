"""common/capabilities.py alone: signing, tampering, expiry, rights, holders, and the separation
between capabilities and tokens (one secret signs both)."""

from __future__ import annotations

import time

import pytest

from chainfs.common import auth, capabilities
from chainfs.common.errors import ChainfsError, Reason

SECRET = b"s" * 32


def reason(fn, *args) -> Reason:
    with pytest.raises(ChainfsError) as err:
        fn(*args)
    return err.value.reason


def test_round_trip_and_tampering() -> None:
    text = capabilities.issue(SECRET, 42, "rw", 60, "user:alice")
    cap = capabilities.verify(SECRET, text)
    assert (cap.inode, cap.rights, cap.holder) == (42, "rw", "user:alice")
    assert capabilities.peek(text) == cap
    prefix, body, mac = text.split(".")
    other = capabilities.issue(SECRET, 43, "rwd", 60, "user:alice").split(".")[1]
    for bad in (f"{prefix}.{other}.{mac}", f"{prefix}.{body}.{mac[:-2]}xx", f"cfs1.{body}.{mac}", "", "cap1.x"):
        assert reason(capabilities.verify, SECRET, bad) == Reason.UNAUTHENTICATED
    assert reason(capabilities.verify, b"o" * 32, text) == Reason.UNAUTHENTICATED
    assert reason(capabilities.verify, SECRET, capabilities.issue(SECRET, 42, "r", -1)) == Reason.UNAUTHENTICATED
    with pytest.raises(ValueError):
        capabilities.issue(SECRET, 1, "x", 60)


def test_a_capability_is_not_a_token_nor_a_token_a_capability() -> None:
    token = auth.issue(SECRET, "user", "alice")
    assert reason(capabilities.verify, SECRET, "cap1." + token.split(".", 1)[1]) == Reason.UNAUTHENTICATED
    cap = capabilities.issue(SECRET, 1, "rwd", 60)
    assert reason(auth.verify, SECRET, "cfs1." + cap.split(".", 1)[1]) == Reason.UNAUTHENTICATED


def test_node_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    auth.set_secret(SECRET)
    try:
        alice = auth.Identity("user", "alice")
        node = auth.Identity("node", "storage-0")
        cap = capabilities.issue(SECRET, 7, "r", 60, "user:alice")
        capabilities.require_read([cap], [7, 7], alice)
        capabilities.require_read([cap], [7], None)  # the local socket: no holder to compare
        assert reason(capabilities.require_read, [cap], [7], auth.Identity("user", "bob")) == Reason.PERMISSION_DENIED
        assert reason(capabilities.require_read, [cap], [7, 8], alice) == Reason.PERMISSION_DENIED
        assert reason(capabilities.require_read, [], [7], alice) == Reason.UNAUTHENTICATED
        assert reason(capabilities.require, cap, 7, "w", alice) == Reason.PERMISSION_DENIED
        assert reason(capabilities.require, "", 7, "w", alice) == Reason.UNAUTHENTICATED
        capabilities.require("", 7, "w", node)  # nodes hold the secret: forwards need none
        root = auth.Identity("user", "root", root=True)
        capabilities.require_read([], [7], root)  # fsck reads every listed chunk
        assert reason(capabilities.require, "", 7, "w", root) == Reason.UNAUTHENTICATED  # but writes as anyone
        auth.set_secret(None)
        capabilities.require("", 7, "w", alice)  # insecure: nothing is checked
    finally:
        auth.set_secret(None)


def test_grant_follows_the_process_secret_and_ttl() -> None:
    assert capabilities.grant(1, "r") == ""
    auth.set_secret(SECRET)
    old = capabilities.ttl()
    try:
        capabilities.set_ttl(5)
        cap = capabilities.verify(SECRET, capabilities.grant(1, "r", "user:a"))
        assert 0 < cap.expires_ms / 1000 - time.time() <= 5
        with pytest.raises(ValueError):
            capabilities.set_ttl(0)
    finally:
        capabilities.set_ttl(old)
        auth.set_secret(None)
