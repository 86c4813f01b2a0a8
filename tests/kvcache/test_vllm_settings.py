"""The connector's pieces that need no vLLM: its settings and the breaker over a failing store."""

from __future__ import annotations

import pytest

from chainfs.integrations.vllm_support import Breaker, ConnectorSettings, open_store
from chainfs.kvcache import KVNamespace
from chainfs.loadtest.vllm_engines import tiers


def test_settings_validate_every_key() -> None:
    s = ConnectorSettings.from_extra({"url": "file:///tmp/kv", "capacity_bytes": 1e9})
    assert s.capacity_bytes == 1_000_000_000 and isinstance(s.capacity_bytes, int)
    for bad in ({}, {"url": "kv"}, {"url": "file:///x", "capacity": 1}, {"url": "file:///x", "capacity_bytes": -1},
                {"url": "file:///x", "retry_deadline_s": 0}, {"url": "file:///x", "capacity_bytes": "lots"},
                {"url": "file:///x", "save_wait_s": -1}):
        with pytest.raises(ValueError):
            ConnectorSettings.from_extra(bad)


def test_a_store_that_is_down_is_a_miss_and_opens_the_breaker(tmp_path) -> None:
    ns = KVNamespace(model="m", dtype="bfloat16", layout="LBHNC.L2.H1.N32.C128", block_tokens=32)
    port = 1  # nothing listens there
    settings = ConnectorSettings.from_extra({"url": f"chainfs://127.0.0.1:{port}/kv", "retry_deadline_s": 0.5})
    store = open_store(settings, ns)  # the index rebuild fails: counted, not raised
    breaker = Breaker(backoff_s=30)
    with breaker.watch(store):
        found = store.lookup(list(range(64)))
    assert found.hit_blocks == 0 and store.stats.errors >= 1 and breaker.open


def test_tiers_split_hits_between_vllm_memory_and_the_store() -> None:
    engines = [{"url": "a", "connector": {"loaded_tokens": 64}, "store": {"bytes_read": 10, "bytes_written": 5}},
               {"url": "b", "connector": {"loaded_tokens": 32}, "store": {"bytes_read": 1, "bytes_written": 2}}]
    assert tiers(engines, 200) == {"vllm_memory_tokens": 104, "store_tokens": 96, "kv_bytes_read": 11,
                                   "kv_bytes_written": 7}
    assert tiers([{"write_behind": {}}], 5) is None  # the numpy engine's stats
