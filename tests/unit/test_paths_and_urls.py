"""Path normalization, URL parsing and chunk placement: pure functions, no servers."""

from __future__ import annotations

import errno

import pytest

from chainfs.client.rpc.placement import chain_of, chunk_count, chunk_ranges
from chainfs.client.url import parse_url
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.paths import MAX_NAME_BYTES, normalize, split_path, validate_name
from chainfs.proto import meta_pb2 as mpb


@pytest.mark.parametrize("raw, expected", [
    ("/", "/"), ("", "/"), ("a/b", "/a/b"), ("//a///b/", "/a/b"), ("/a/./b", "/a/b"),
    ("/a/b/../c", "/a/c"), ("/é/名前", "/é/名前"),
])
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw, reason", [
    ("/..", Reason.INVALID_ARGUMENT),
    ("/a/../../b", Reason.INVALID_ARGUMENT),
    ("/a\x00b", Reason.INVALID_ARGUMENT),
    ("/" + "x" * (MAX_NAME_BYTES + 1), Reason.NAME_TOO_LONG),
    ("/" + "é" * 128, Reason.NAME_TOO_LONG),  # 256 bytes in UTF-8
    ("/a" * 300, Reason.INVALID_ARGUMENT),     # too deep
    ("/" + "/".join(["y" * 200] * 25), Reason.NAME_TOO_LONG),  # over the total length bound
])
def test_bad_paths_are_refused(raw: str, reason: Reason) -> None:
    with pytest.raises(ChainfsError) as info:
        split_path(raw)
    assert info.value.reason == reason


def test_validate_name() -> None:
    assert validate_name("ok.txt") == "ok.txt"
    for bad in ("", ".", "..", "a/b", "a\x00"):
        with pytest.raises(ChainfsError):
            validate_name(bad)


def test_parse_url() -> None:
    url = parse_url("chainfs://127.0.0.1:7000/a//b/")
    assert (url.host, url.port, url.path, url.address) == ("127.0.0.1", 7000, "/a/b", "127.0.0.1:7000")
    assert str(url) == "chainfs://127.0.0.1:7000/a/b"
    assert parse_url("chainfs://localhost:1").path == "/"
    several = parse_url("chainfs://10.0.0.1:7000,10.0.0.2:7001/x")  # several metaservers, one cluster
    assert several.address == "10.0.0.1:7000,10.0.0.2:7001" and several.path == "/x"
    assert str(several) == "chainfs://10.0.0.1:7000,10.0.0.2:7001/x"
    # `?` and `#` belong to names (and globs), as on a local file system.
    assert parse_url("chainfs://h:1/d/g?.bin#2").path == "/d/g?.bin#2"


def test_url_without_host_uses_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINFS_ADDRESS", "10.0.0.5:7000")
    assert parse_url("chainfs:///a/b").address == "10.0.0.5:7000"
    assert parse_url("chainfs:///a/b").path == "/a/b"


@pytest.mark.parametrize("bad", [
    "s3://bucket/key", "chainfs://host/path", "chainfs://:7000/x", "chainfs://h:notaport/x",
    "chainfs://h:70000/x", "chainfs://h:0/x", "/local/path",
    "chainfs://h:1,/x", "chainfs://h:1,h2/x",
    "chainfs:///x",
])
def test_malformed_urls_raise_value_error(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINFS_ADDRESS", raising=False)
    with pytest.raises(ValueError):
        parse_url(bad)


def test_url_with_escaping_path_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_url("chainfs://h:1/../etc")
    with pytest.raises(OSError) as info:
        parse_url("chainfs://h:1/" + "n" * 300)
    assert info.value.errno == errno.ENAMETOOLONG


def test_chunk_ranges_cover_the_range_exactly() -> None:
    ranges = chunk_ranges(offset=1000, length=10_000, chunk_size=4096)
    assert [(r.index, r.offset, r.length) for r in ranges] == [(0, 1000, 3096), (1, 0, 4096), (2, 0, 2808)]
    assert sum(r.length for r in ranges) == 10_000
    assert ranges[1].file_offset == 4096
    assert chunk_ranges(0, 0, 4096) == []
    with pytest.raises(ValueError):
        chunk_ranges(-1, 5, 4096)


def test_chain_of_stripes_round_robin() -> None:
    layout = mpb.Layout(chunk_size=4096, chains=[7, 3, 9])
    assert [chain_of(layout, i) for i in range(5)] == [7, 3, 9, 7, 3]
    assert chunk_count(0, 4096) == 0 and chunk_count(4097, 4096) == 2
    with pytest.raises(ValueError):
        chain_of(mpb.Layout(chunk_size=4096), 0)


def test_canonical_shortcut_agrees_with_the_full_rules(monkeypatch) -> None:
    """Paths already canonical skip the split; on random paths both ways give the same answer."""
    import random

    import chainfs.common.paths as paths

    def outcome(p: str):
        try:
            return paths.split_path(p), paths.normalize(p)
        except ChainfsError as exc:
            return exc.reason

    rng = random.Random(1)
    samples = ["".join(rng.choice("ab./\x00\u00e9") for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    samples += ["/" + "a" * 300, "/kv/ns/ab/cd/" + "f" * 32, "/.hidden", "/a/..", "/a/b/"]
    fast = [outcome(p) for p in samples]
    monkeypatch.setattr(paths, "_is_canonical", lambda p: False)
    assert fast == [outcome(p) for p in samples]
