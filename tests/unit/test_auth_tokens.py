"""common/auth.py on its own: tokens round-trip, forgeries and expiry are refused, prefixes hold,
and a server without a secret refuses to start unless told --insecure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chainfs.common import auth
from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.server import run_server as run_meta
from chainfs.storageserver.server import run_server as run_storage


def test_token_round_trip_and_forgeries() -> None:
    secret = os.urandom(32)
    token = auth.issue(secret, "user", "alice", prefix="/a/", ttl=60)
    ident = auth.verify(secret, token)
    assert (ident.kind, ident.name, ident.prefix, ident.root) == ("user", "alice", "/a", False)
    head, body, mac = token.split(".")
    tampered = auth.issue(secret, "user", "alice", root=True).split(".")[1]
    for bad in (f"{head}.{tampered}.{mac}", f"{head}.{body}.{mac[:-2]}AA", "cfs1.x", "",
                auth.issue(os.urandom(32), "user", "alice"), auth.issue(secret, "user", "old", ttl=-5)):
        with pytest.raises(ChainfsError) as err:
            auth.verify(secret, bad)
        assert err.value.reason is Reason.UNAUTHENTICATED


def test_prefix_rules() -> None:
    ident = auth.Identity("user", "a", prefix="/t")
    assert ident.may_touch("/t") and ident.may_touch("/t/x/y")
    assert not ident.may_touch("/tx") and not ident.may_touch("/t/../u") and not ident.may_touch("/")
    with pytest.raises(ValueError):
        auth.issue(os.urandom(32), "user", "a", prefix="relative")


def test_request_paths_of_nested_and_repeated_fields() -> None:
    """Found by the fuzz test: requests with a nested message (a Mkdir's layout) raised
    AttributeError (FieldDescriptor.label is gone in protobuf 7), so a prefix token got UNKNOWN."""
    from chainfs.proto import meta_pb2 as mpb
    mkdir = mpb.MkdirRequest(path="/t/x", layout=mpb.Layout(chunk_size=4096, chains=[1, 2]))
    assert auth.request_paths(mkdir) == ["/t/x"]
    many = mpb.StatManyRequest(paths=["/t/a", "/u/b"])
    assert auth.request_paths(many) == ["/t/a", "/u/b"]
    rename = mpb.RenameRequest(src="/t/a", dst="/u/b")
    assert sorted(auth.request_paths(rename)) == ["/t/a", "/u/b"]
    ident = auth.Identity("user", "a", prefix="/t")
    auth.authorize_paths("/chainfs.Namespace/Mkdir", ident, mkdir)
    with pytest.raises(ChainfsError) as err:
        auth.authorize_paths("/chainfs.Namespace/StatMany", ident, many)
    assert err.value.reason is Reason.PERMISSION_DENIED


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "secret"
    secret = auth.create_secret(path)
    assert len(secret) == 32 and auth.create_secret(path) == secret  # kept, not replaced
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        auth.load_secret(path)


def test_servers_refuse_to_start_without_a_secret(tmp_path: Path) -> None:
    assert run_meta(["--data-dir", str(tmp_path / "meta")]) == 2
    assert run_storage(["--data-dir", str(tmp_path / "s"), "--meta", "127.0.0.1:1"]) == 2
    assert not (tmp_path / "meta").exists()  # refused before opening anything
