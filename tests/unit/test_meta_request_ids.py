"""Request ids in the namespace, on each backend: a retry gets the first answer, ids are bounded and forgotten."""

from __future__ import annotations

from typing import Callable

import pytest

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.store import P_REQUEST, P_REQUEST_AGE, Store


class Clock:
    now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def test_retries_replay_and_ids_expire(open_store: Callable[..., Store]) -> None:
    clock = Clock()
    with open_store() as store:
        ns = Namespace(store, None, replication=1, clock_ns=clock)
        first = ns.mkdir("/a", request_id="c:1")
        assert ns.mkdir("/a", request_id="c:1") == first  # not EXISTS
        ns.rename("/a", "/b", request_id="c:2")
        ns.rename("/a", "/b", request_id="c:2")  # not NOT_FOUND
        ns.remove("/b", request_id="c:3")
        ns.remove("/b", request_id="c:3")
        with pytest.raises(ChainfsError) as info:
            ns.rename("/x", "/y", request_id="c:1")  # an id names one mutation only
        assert info.value.reason == Reason.INVALID_ARGUMENT
        # a failure is not remembered: the retry runs again (and may now succeed)
        with pytest.raises(ChainfsError):
            ns.remove("/c", request_id="c:4")
        ns.mkdir("/c")
        ns.remove("/c", request_id="c:4")
        for bad in ("x" * (config.MAX_REQUEST_ID_BYTES + 1), "caf\u00e9", "a\nb"):
            with pytest.raises(ChainfsError) as info:
                ns.mkdir("/d", request_id=bad)
            assert info.value.reason == Reason.INVALID_ARGUMENT
        assert ns.sweep_request_ids() == 0
        clock.now += int(config.REQUEST_ID_TTL * 1e9) + 1
        ns.mkdir("/late", request_id="c:5")
        assert ns.sweep_request_ids() == 4  # c:1..c:4, not the fresh c:5
        assert [k for k, _ in store.scan(P_REQUEST)] == [P_REQUEST + b"c:5"]
        assert len(list(store.scan(P_REQUEST_AGE))) == 1
        assert ns.mkdir("/a", request_id="c:1").id != first.id  # forgotten: applied again
