"""The engine's HTTP app in-process (Werkzeug test client): responses, 400s, metrics, failures."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from chainfs.cluster.process import wait_for
from chainfs.engine.cache import CacheHandle, namespace_for
from chainfs.engine.model import Transformer
from chainfs.engine.server import EngineApp
from chainfs.engine.service import Engine

PROMPT = "The KV cache of a shared prefix lives on chainfs; " * 4  # 200 tokens: 12 full blocks of 16


def make(model: Transformer, url: str | None, block_tokens: int = 16) -> tuple[Client, Engine]:
    cache = CacheHandle(url, namespace_for(model.config, block_tokens)) if url else None
    engine = Engine(model, cache)
    return Client(EngineApp(engine)), engine


def scrape(client: Client) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, parsed by prometheus_client, keyed by (name, labels)."""
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return _LabelKeyed(out)


class _LabelKeyed(dict):
    def __getitem__(self, key):  # (name, {labels}) -> value
        name, labels = key
        return super().__getitem__((name, frozenset(labels.items())))


def post(client: Client, body) -> tuple[int, dict]:
    """One request, then waits until its new KV blocks are written (stores are write-behind)."""
    r = client.post("/v1/completions", json=body) if not isinstance(body, (bytes, str)) else \
        client.post("/v1/completions", data=body, content_type="application/json")
    writer = client.application.engine.writer
    assert writer is None or writer.drain(30), "write-behind did not drain"
    return r.status_code, r.json


def test_completion_shape_and_cache_hits_match_store_stats(tiny_model: Transformer) -> None:
    client, engine = make(tiny_model, f"memory://kv-{uuid.uuid4().hex}")
    status, first = post(client, {"prompt": PROMPT, "max_tokens": 5})
    assert status == 200
    choice, usage = first["choices"][0], first["usage"]
    assert len(choice["token_ids"]) == 5 and isinstance(choice["text"], str)
    assert usage["prompt_tokens"] == 200 and usage["completion_tokens"] == 5
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0 == usage["prompt_cache_hit_tokens"]
    assert set(first["timings"]) >= {"ttft_ms", "kv_lookup_ms", "kv_load_ms", "prefill_compute_ms", "kv_store_ms"}

    _, second = post(client, {"prompt": PROMPT, "max_tokens": 5})
    u = second["usage"]
    assert u["prompt_tokens_details"]["cached_tokens"] == 192 == u["prompt_cache_hit_tokens"]
    assert u["prompt_cache_miss_tokens"] == 8
    assert second["choices"][0]["token_ids"] == choice["token_ids"], "cached prefill changed the output"
    # a prompt given as token ids with a shared prefix hits the shared blocks only
    ids = list(PROMPT.encode())[:100] + [1, 2, 3]
    _, third = post(client, {"prompt": ids, "max_tokens": 0})
    assert third["usage"]["prompt_cache_hit_tokens"] == 96 and third["choices"][0]["token_ids"] == []

    stats = engine.cache.stats()
    assert stats["hit_tokens"] == stats["loaded_tokens"] == 192 + 96
    m = scrape(client)
    model = {"model_name": "tiny"}
    assert m[("vllm:prefix_cache_hits_total", model)] == 288
    assert m[("vllm:prefix_cache_queries_total", model)] == 200 * 2 + 103
    assert m[("vllm:external_prefix_cache_hits_total", model)] == 288
    assert m[("chainfs_engine_prefix_cache_hits_total", {**model, "tier": "memory"})] == 288
    assert m[("vllm:prompt_tokens_total", model)] == 503 and m[("vllm:generation_tokens_total", model)] == 10
    assert m[("vllm:time_to_first_token_seconds_count", model)] == 2  # the max_tokens=0 call has no token
    assert m[("vllm:e2e_request_latency_seconds_count", model)] == 3
    assert m[("vllm:inter_token_latency_seconds_count", model)] == 2 * 4
    assert m[("vllm:request_success_total", {**model, "finished_reason": "length"})] == 3
    assert m[("vllm:num_requests_running", model)] == 0 == m[("vllm:num_requests_waiting", model)]
    assert m[("chainfs_engine_prefill_compute_seconds_count", model)] == 3
    assert m[("chainfs_kvcache_hit_tokens_total", {})] == 288
    health = client.get("/health").json
    assert health["status"] == "ok" and health["cache"]["stats"]["hit_blocks"] == 18


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "malformed JSON"),
    ([1, 2], "JSON object"),
    ({"max_tokens": 3}, "prompt is required"),
    ({"prompt": ""}, "empty"),
    ({"prompt": [1, 256, 3]}, "token ids"),
    ({"prompt": [1, -1]}, "token ids"),
    ({"prompt": [{"a": 1}]}, "prompt must be"),
    ({"prompt": [[1, "x"]]}, "only integers"),
    ({"prompt": "hi", "n": 0}, "n must be"),
    ({"prompt": "hi", "stop": [""]}, "stop must be"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "logprobs": 9}, "logprobs"),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 1.5}, "max_tokens"),
    ({"prompt": "hi", "temperature": -0.5}, "temperature"),
    ({"prompt": "x" * 1020, "max_tokens": 10}, "context"),
    ({"prompt": list(range(200)) * 6}, "context"),
])
def test_bad_input_is_400_with_a_message(tiny_model: Transformer, body, fragment: str) -> None:
    client, _ = make(tiny_model, None)
    status, reply = post(client, body)
    assert status == 400 and fragment in reply["error"]["message"]
    assert client.get("/health").status_code == 200


def test_unknown_route_and_method(tiny_model: Transformer) -> None:
    client, _ = make(tiny_model, None)
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/completions").status_code == 405


def test_sampling_with_temperature_is_seeded(tiny_model: Transformer) -> None:
    client, _ = make(tiny_model, None)
    body = {"prompt": "abc", "max_tokens": 8, "temperature": 1.0, "seed": 3}
    assert post(client, body)[1]["choices"][0]["token_ids"] == post(client, body)[1]["choices"][0]["token_ids"]


class Flaky:
    """A filesystem proxy that fails every call while `broken`, like an unreachable store."""

    def __init__(self, fs) -> None:
        self._fs, self.broken = fs, False

    def __getattr__(self, name: str):
        attr = getattr(self._fs, name)
        if callable(attr) and not name.startswith("_"):
            def call(*a, **k):
                if self.broken:
                    raise ConnectionError("store unreachable")
                return attr(*a, **k)
            return call
        return attr


def test_failing_store_engine_still_serves_counts_and_recovers(tiny_model: Transformer) -> None:
    client, engine = make(tiny_model, f"memory://kv-{uuid.uuid4().hex}")
    store = engine.cache.get()
    flaky = store.fs = Flaky(store.fs)
    flaky.broken = True
    status, body = post(client, {"prompt": PROMPT, "max_tokens": 3})
    assert status == 200 and body["usage"]["prompt_cache_hit_tokens"] == 0
    expected = body["choices"][0]["token_ids"]
    assert engine.cache.errors >= 1 and engine.cache.stats()["unavailable"] >= 2  # then fail-fast
    assert scrape(client)[("chainfs_kvcache_errors_total", {})] > 0
    flaky.broken = False
    wait_for(lambda: not store.breaker.is_open, 10.0, "the store's breaker to close")
    post(client, {"prompt": PROMPT, "max_tokens": 3})  # stores the blocks now
    _, body = post(client, {"prompt": PROMPT, "max_tokens": 3})
    assert body["usage"]["prompt_cache_hit_tokens"] == 192 and body["choices"][0]["token_ids"] == expected


def test_unopenable_store_is_counted_and_engine_serves(tiny_model: Transformer) -> None:
    client, engine = make(tiny_model, "nosuchprotocol://x/y")
    status, body = post(client, {"prompt": "hello", "max_tokens": 2})
    assert status == 200 and body["usage"]["prompt_cache_hit_tokens"] == 0
    assert engine.cache.open_errors == 1 and client.get("/health").json["cache"]["open"] is False


def test_corrupt_block_is_detected_counted_and_recomputed(tiny_model: Transformer, tmp_path) -> None:
    client, engine = make(tiny_model, f"file://{tmp_path}/kv")
    _, clean = post(client, {"prompt": PROMPT, "max_tokens": 4})
    store = engine.cache.get()
    ref = store.lookup(list(PROMPT.encode())).refs[5]  # block 5's bytes in its segment file
    data = bytearray(open(ref.path, "rb").read())
    data[ref.offset + ref.size - 3] ^= 0x10
    open(ref.path, "wb").write(bytes(data))
    store.drop_cached_refs()
    _, body = post(client, {"prompt": PROMPT, "max_tokens": 4})
    assert body["usage"]["prompt_cache_hit_tokens"] == 5 * 16, "blocks from the corrupt one on are recomputed"
    assert body["choices"][0]["token_ids"] == clean["choices"][0]["token_ids"]
    assert store.stats.corrupt_blocks == 1
    # Block 5 shared a segment (blocks 4..7, at block 7's path) with block 4; the rewritten 5..7
    # replace it, so block 4 is recomputed once more, then everything hits again.
    _, again = post(client, {"prompt": PROMPT, "max_tokens": 4})
    assert again["usage"]["prompt_cache_hit_tokens"] == 4 * 16
    _, again = post(client, {"prompt": PROMPT, "max_tokens": 4})
    assert again["usage"]["prompt_cache_hit_tokens"] == 192
    assert np.isfinite(again["timings"]["ttft_ms"])
