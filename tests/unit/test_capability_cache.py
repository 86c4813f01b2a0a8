"""client/rpc/grants.py alone: which capability a request gets, when it is refreshed, and what a
refresh that fails or changes nothing reports."""

from __future__ import annotations

import time

from chainfs.client.rpc.grants import CapabilityCache
from chainfs.common import capabilities

SECRET = b"s" * 32


def cap(inode: int, rights: str, ttl: float) -> str:
    return capabilities.issue(SECRET, inode, rights, ttl)


def test_reads_prefer_a_read_capability_and_writes_need_a_session_one() -> None:
    cache = CapabilityCache()
    write, read = cap(1, "rwd", 600), cap(1, "r", 600)
    cache.learn(1, write, "rwd")
    assert cache.get(1, "r") == write and cache.get(1, "w") == write
    cache.learn(1, read, "r")
    assert cache.get(1, "r") == read and cache.get(1, "w") == write and cache.get(2, "r") == ""
    cache.learn(3, "", "r")  # an insecure cluster's empty capability is no capability
    assert cache.get(3, "r") == ""


def test_a_capability_near_its_end_is_refreshed_before_use() -> None:
    cache = CapabilityCache()
    calls: list[int] = []

    def renew() -> None:
        calls.append(1)
        cache.learn(5, cap(5, "r", 600), "r", renew)

    old = cap(5, "r", 0.05)
    cache.learn(5, old, "r", renew)
    deadline = time.monotonic() + 5
    while time.time() * 1000 < capabilities.peek(old).expires_ms - 10:  # the clock, not a sync point
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert cache.get(5, "r") != old and calls == [1]
    assert cache.get(5, "r") and calls == [1]  # the new one has most of its life left


def test_forced_refresh_reports_whether_a_new_capability_came() -> None:
    cache = CapabilityCache()
    assert not cache.refresh(9, "r")  # nothing held
    cache.learn(9, cap(9, "r", 600), "r")
    assert not cache.refresh(9, "r")  # no way to renew it

    def failing() -> None:
        raise PermissionError(13, "file removed")

    cache.learn(10, cap(10, "r", 600), "r", failing)
    assert not cache.refresh(10, "r")
    # a closed session's refresh that stats instead: reads get the new read capability
    cache.learn(11, cap(11, "rwd", 600), "rwd", lambda: cache.learn(11, cap(11, "r", 600), "r"))
    assert cache.refresh(11, "r")
    assert capabilities.peek(cache.get(11, "r")).rights == "r"
