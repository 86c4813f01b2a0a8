"""Prometheus metrics of one engine, in its own registry (so tests can run several engines).

Names are vLLM's (V1 engine), so vLLM's dashboards and alerts work on these engines unchanged;
every series has the `model_name` label. One "request" here is one engine call (one choice of
one prompt), as vLLM counts sequences:

| metric | kind | meaning |
| --- | --- | --- |
| `vllm:num_requests_running` / `vllm:num_requests_waiting` | gauge | the engine computes one call at a time: running is 0 or 1, waiting the calls queued behind it |
| `vllm:prompt_tokens_total` / `vllm:generation_tokens_total` | counter | tokens prefilled (cached or not) / generated |
| `vllm:request_success_total{finished_reason}` | counter | finished calls by reason: stop, length, abort |
| `vllm:time_to_first_token_seconds` | histogram | arrival (queueing included) to first token |
| `vllm:inter_token_latency_seconds` | histogram | between consecutive tokens of one call |
| `vllm:e2e_request_latency_seconds` | histogram | arrival to last token |
| `vllm:prefix_cache_queries_total` / `vllm:prefix_cache_hits_total` | counter | prompt tokens looked up / found, all tiers (hits / queries = token hit rate) |
| `vllm:external_prefix_cache_queries_total` / `..._hits_total` | counter | the same for the external (KV store) tier, vLLM's name for a KV connector's cache |
| `chainfs_engine_prefix_cache_hits_total{tier}` | counter | hit tokens by tier: the store's URL scheme (`chainfs`, `file`, `memory`) |
| `chainfs_engine_tenant_prefix_cache_queries_total{tenant}` / `..._hits_total{tenant}` | counter | prompt tokens looked up / found per tenant: its name in the key file, else `key-` and 8 hex digits of its key's SHA-256 (`engine/tenants.py`); `default` without keys. Never a key, so the labels are bounded by the configured keys |
| `chainfs_engine_http_threads_busy`, `chainfs_engine_http_rejected_total` | gauge, counter | connections being served (at most `--max-http-threads`); connections answered 503 after waiting for a thread |
| `chainfs_engine_prefill_compute_seconds`, `chainfs_engine_kv_load_seconds` | histogram | prefill of the uncached rest; lookup + load of cached KV |
| `chainfs_kvcache_*_total` | counter | the block store's own counters, read at scrape time |

The engine has one prefix-cache tier today (the store); a Completion that carries `tier_hits`
(tier -> hit tokens) is split by those tiers instead.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from chainfs.engine.cache import CacheHandle
from chainfs.engine.service import Completion

disable_created_metrics()  # no `_created` series: they double the scrape and no dashboard reads them
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class EngineMetrics:
    def __init__(self, model_name: str, cache: CacheHandle | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.model_name = m = model_name
        self.tier = (urlsplit(cache.url).scheme or "file") if cache is not None else None
        label = ["model_name"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, label, registry=r).labels(m)

        def hist(name: str, doc: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, doc, label, buckets=buckets, registry=r).labels(m)

        self._lock = threading.Lock()
        self._in_flight = 0
        Gauge("vllm:num_requests_running", "engine calls being computed", label, registry=r).labels(m) \
            .set_function(lambda: min(self._in_flight, 1))
        Gauge("vllm:num_requests_waiting", "engine calls queued behind the running one", label, registry=r) \
            .labels(m).set_function(lambda: max(self._in_flight - 1, 0))
        self.prompt_tokens = counter("vllm:prompt_tokens", "prompt tokens processed")
        self.generation_tokens = counter("vllm:generation_tokens", "tokens generated")
        self.success = Counter("vllm:request_success", "finished engine calls", ["model_name", "finished_reason"],
                               registry=r)
        self.ttft = hist("vllm:time_to_first_token_seconds", "arrival to first token")
        self.itl = hist("vllm:inter_token_latency_seconds", "time between tokens", _ITL_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "arrival to last token")
        self.cache_queries = counter("vllm:prefix_cache_queries", "prompt tokens looked up, all tiers")
        self.cache_hits = counter("vllm:prefix_cache_hits", "prompt tokens found, all tiers")
        self.ext_queries = counter("vllm:external_prefix_cache_queries", "prompt tokens looked up in the KV store")
        self.ext_hits = counter("vllm:external_prefix_cache_hits", "prompt tokens found in the KV store")
        self.tier_hits = Counter("chainfs_engine_prefix_cache_hits", "prompt tokens found, by tier",
                                 ["model_name", "tier"], registry=r)
        self.errors = Counter("chainfs_engine_http_errors", "requests answered with an error",
                              ["model_name", "status"], registry=r)
        self.tenant_queries = Counter("chainfs_engine_tenant_prefix_cache_queries",
                                      "prompt tokens looked up, by tenant", ["model_name", "tenant"], registry=r)
        self.tenant_hits = Counter("chainfs_engine_tenant_prefix_cache_hits",
                                   "prompt tokens found, by tenant", ["model_name", "tenant"], registry=r)
        self.prefill = hist("chainfs_engine_prefill_compute_seconds", "prefill compute (uncached tokens only)")
        self.kv_load = hist("chainfs_engine_kv_load_seconds", "lookup and load of cached KV")
        if cache is not None:
            r.register(_StoreCollector(cache))

    def watch_http(self, server: Any) -> None:
        """Gauges of the HTTP server's thread pool (a BoundedWSGIServer), read at scrape time."""
        Gauge("chainfs_engine_http_threads_busy", "connections being served", ["model_name"], registry=self.registry) \
            .labels(self.model_name).set_function(lambda: server.busy)
        self.registry.register(_Rejected(self.model_name, server))

    def track(self, tenant: str = "default") -> "RequestTracker":
        """Call at an engine call's arrival; the tracker records its tokens and its end."""
        with self._lock:
            self._in_flight += 1
        return RequestTracker(self, tenant)

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def observe(self, result: Completion, tenant: str = "default") -> None:
        self.tenant_queries.labels(self.model_name, tenant).inc(result.prompt_tokens)
        self.tenant_hits.labels(self.model_name, tenant).inc(result.cached_tokens)
        self.prompt_tokens.inc(result.prompt_tokens)
        self.generation_tokens.inc(len(result.token_ids))
        self.cache_queries.inc(result.prompt_tokens)
        self.cache_hits.inc(result.cached_tokens)
        if result.cache_used:
            self.ext_queries.inc(result.prompt_tokens)
            self.ext_hits.inc(result.cached_tokens)
        tiers = getattr(result, "tier_hits", None) or ({self.tier: result.cached_tokens} if self.tier else {})
        for tier, hits in tiers.items():
            self.tier_hits.labels(self.model_name, tier).inc(hits)
        t = result.timings
        self.prefill.observe(t.get("prefill_compute_ms", 0.0) / 1000)
        self.kv_load.observe((t.get("kv_lookup_ms", 0.0) + t.get("kv_load_ms", 0.0)) / 1000)


class RequestTracker:
    """One engine call's timeline: arrival, each token, the end."""

    def __init__(self, metrics: EngineMetrics, tenant: str = "default") -> None:
        self.metrics = metrics
        self.tenant = tenant
        self.arrival = self.last = time.perf_counter()
        self.tokens = 0
        self.done = False

    def token(self) -> None:
        now = time.perf_counter()
        if self.tokens == 0:
            self.metrics.ttft.observe(now - self.arrival)
        else:
            self.metrics.itl.observe(now - self.last)
        self.last = now
        self.tokens += 1

    def finish(self, completion: Completion | None, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.metrics._done()
        self.metrics.success.labels(self.metrics.model_name, reason).inc()
        self.metrics.e2e.observe(time.perf_counter() - self.arrival)
        if completion is not None:
            self.metrics.observe(completion, self.tenant)


class _StoreCollector(Collector):
    """The block store's counters (blocks, bytes, evictions, corrupt blocks, errors) at scrape."""

    def __init__(self, cache: CacheHandle) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in self.cache.stats().items():
            yield CounterMetricFamily(f"chainfs_kvcache_{name}", f"kv block store: {name}", value=value)


class _Rejected(Collector):
    """The HTTP server's count of connections answered 503, read at scrape."""

    def __init__(self, model_name: str, server: Any) -> None:
        self.model_name, self.server = model_name, server

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("chainfs_engine_http_rejected", "connections answered 503: every HTTP thread busy",
                                     labels=["model_name"])
        family.add_metric([self.model_name], self.server.rejected)
        yield family
