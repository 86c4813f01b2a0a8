"""Prometheus metrics of one engine, in its own registry (so tests can run several engines).

Names follow vLLM's prefix-cache counters: queries and hits are counted in prompt tokens, so
hits / queries is the token hit rate. The block store's own counters are exported as they are.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from chainfs.engine.cache import CacheHandle
from chainfs.engine.service import Completion

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class EngineMetrics:
    def __init__(self, cache: CacheHandle | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chainfs_engine_requests", "completion requests", ["status"], registry=r)
        self.prompt_tokens = Counter("chainfs_engine_prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter("chainfs_engine_generation_tokens", "tokens generated", registry=r)
        self.cache_queries = Counter("chainfs_engine_prefix_cache_queries",
                                     "prompt tokens looked up in the prefix cache", registry=r)
        self.cache_hits = Counter("chainfs_engine_prefix_cache_hits",
                                  "prompt tokens served from the prefix cache", registry=r)
        self.ttft = Histogram("chainfs_engine_time_to_first_token_seconds", "time to first token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.prefill = Histogram("chainfs_engine_prefill_compute_seconds",
                                 "prefill compute time (uncached tokens only)", buckets=_LATENCY_BUCKETS, registry=r)
        self.kv_load = Histogram("chainfs_engine_kv_load_seconds", "time to lookup and load cached KV",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        if cache is not None:
            r.register(_StoreCollector(cache))

    def observe(self, result: Completion) -> None:
        self.requests.labels("ok").inc()
        self.prompt_tokens.inc(result.prompt_tokens)
        self.generation_tokens.inc(len(result.token_ids))
        self.cache_queries.inc(result.prompt_tokens)
        self.cache_hits.inc(result.cached_tokens)
        t = result.timings
        self.ttft.observe(t["ttft_ms"] / 1000)
        self.prefill.observe(t["prefill_compute_ms"] / 1000)
        self.kv_load.observe((t["kv_lookup_ms"] + t["kv_load_ms"]) / 1000)


class _StoreCollector(Collector):
    """The block store's counters (blocks, bytes, evictions, corrupt blocks, errors) at scrape."""

    def __init__(self, cache: CacheHandle) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in self.cache.stats().items():
            yield CounterMetricFamily(f"chainfs_kvcache_{name}", f"kv block store: {name}", value=value)
