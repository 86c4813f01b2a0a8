"""The engine: prompt in, tokens out, with prefix KV reused from the block store.

A request runs: hash the prompt once -> lookup (one batched stat) -> load (one batched read) ->
[compute lock] prefill of the uncached rest -> first token (TTFT) -> hand the new full blocks to
the write-behind queue -> decode [end of lock] -> wait (bounded) until its blocks are stored ->
answer. Lookup and load happen before the compute lock, so one request's KV I/O overlaps another's
compute, and stores happen on the write-behind thread (`writebehind.py`), so neither a request's
TTFT nor any other request's compute waits for a store; the answer waits for the request's own
blocks, so the next turn of the conversation finds them on whichever engine it reaches. The cache is looked up on
prompt[:-1] because the last prompt token must always be computed to produce logits, so every
block the lookup reports can be used, and the engine's cached tokens equal the store's hits.
TTFT counts from the request's arrival, so time spent waiting for the lock is in it (`queue_ms`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from chainfs.engine.cache import CacheHandle
from chainfs.engine.model import Transformer
from chainfs.engine.writebehind import DEFAULT_MAX_BYTES, Submitted, WriteBehind
from chainfs.kvcache import KVBlockStore

log = logging.getLogger(__name__)

# Called with each sampled token and its logits row (for logprobs); returning False stops decoding
# (a stop string matched, or the client went away).
OnToken = Callable[[int, np.ndarray], bool]


@dataclass
class Completion:
    prompt_tokens: int
    token_ids: list[int]
    cached_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds
    cache_used: bool = False
    kv_bytes_read: int = 0     # KV payload loaded from the store for this request
    kv_bytes_written: int = 0  # KV payload of the new blocks this request handed to the store

    @property
    def miss_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class Engine:
    """One model, one optional cache; requests are computed one at a time (numpy already uses
    every core for one request's matmuls)."""

    def __init__(self, model: Transformer, cache: CacheHandle | None = None,
                 write_behind_bytes: int = DEFAULT_MAX_BYTES, store_wait_s: float = 5.0) -> None:
        self.model = model
        self.cache = cache
        self.writer = WriteBehind(write_behind_bytes) if cache is not None else None
        # How long a finished request waits (outside the lock, after its last token) for its own
        # blocks to reach the store before it answers: the next turn then finds them. 0: never.
        self.store_wait_s = max(0.0, store_wait_s)
        self._lock = threading.Lock()

    @property
    def config(self):  # noqa: ANN201 - ModelConfig
        return self.model.config

    def close(self, timeout: float = 10.0) -> bool:
        """Writes the queued KV blocks within `timeout` (the rest are dropped and counted)."""
        return self.writer.close(timeout) if self.writer is not None else True

    def complete(self, prompt: list[int], max_tokens: int, temperature: float = 0.0,
                 seed: int | None = None, top_p: float = 1.0, on_token: OnToken | None = None,
                 salt: str | None = None) -> Completion:
        """`salt` (a tenant's cache_salt) seeds the block hash chain: only the same salt hits."""
        t0 = time.perf_counter()
        timings = {"kv_lookup_ms": 0.0, "kv_load_ms": 0.0, "kv_store_ms": 0.0}
        tokens = np.asarray(prompt, dtype=np.int64)
        store = self.cache.get() if self.cache else None
        keys: list[bytes] = []
        cached_kv = None
        bytes_read = 0
        if store is not None:  # outside the compute lock: I/O overlaps the running request
            keys = store.keys_of(tokens, salt)  # hashed once for lookup and store
            t = time.perf_counter()
            found = store.lookup(tokens[:-1], keys=keys)
            timings["kv_lookup_ms"] = _ms(t)
            t = time.perf_counter()
            blocks = store.load(found)
            timings["kv_load_ms"] = _ms(t)
            bytes_read = sum(b.nbytes for b in blocks)
            if blocks:
                cached_kv = np.concatenate(blocks, axis=3)
                if cached_kv.shape[:3] + cached_kv.shape[4:] != _layout(self.model):
                    log.warning("cached KV has shape %s, not this model's layout: ignored", cached_kv.shape)
                    cached_kv = None
        t = time.perf_counter()
        with self._lock:
            timings["queue_ms"] = _ms(t)
            result, submitted = self._compute(tokens, cached_kv, keys, store, t0, timings, bytes_read, max_tokens,
                                              temperature, seed, top_p, on_token)
        if submitted is not None and self.store_wait_s > 0:
            t = time.perf_counter()
            if not submitted.wait(self.store_wait_s):
                log.warning("kv blocks of a request not stored within %.1f s: answering anyway", self.store_wait_s)
            result.timings["kv_store_wait_ms"] = round(_ms(t), 3)
        return result

    def _compute(self, tokens: np.ndarray, cached_kv: np.ndarray | None, keys: list[bytes],
                 store: KVBlockStore | None, t0: float, timings: dict[str, float], bytes_read: int,
                 max_tokens: int, temperature: float, seed: int | None, top_p: float,
                 on_token: OnToken | None) -> tuple[Completion, Submitted | None]:
        cached = 0 if cached_kv is None else cached_kv.shape[3]
        submitted: Submitted | None = None
        bytes_written = 0
        t = time.perf_counter()
        logits, kv = self.model.prefill(tokens, cached_kv, reserve=max_tokens)
        timings["prefill_compute_ms"] = _ms(t)
        rng = np.random.default_rng(seed)
        out: list[int] = []
        going = max_tokens > 0
        if going:
            out.append(_sample(logits[-1], temperature, rng, top_p))
            going = on_token is None or on_token(out[-1], logits[-1]) is not False
        timings["ttft_ms"] = _ms(t0)
        if store is not None and self.writer is not None:
            t = time.perf_counter()  # only the hand-off (a copy of the new blocks) is on this path
            b = store.block_tokens
            first, last = cached // b, len(tokens) // b
            new_blocks = [kv[:, :, :, i * b:(i + 1) * b] for i in range(first, last)]
            if new_blocks:
                submitted = self.writer.submit(store, keys[first:last], new_blocks)
                bytes_written = submitted.queued * new_blocks[0].nbytes
            timings["kv_store_ms"] = _ms(t)
        pos = len(tokens)
        while going and len(out) < max_tokens:
            step = self.model.forward(np.asarray(out[-1:]), kv, pos)
            pos += 1
            out.append(_sample(step[-1], temperature, rng, top_p))
            going = on_token is None or on_token(out[-1], step[-1]) is not False
        timings["total_ms"] = _ms(t0)
        return Completion(len(tokens), out, cached, {k: round(v, 3) for k, v in timings.items()},
                          cache_used=store is not None, kv_bytes_read=bytes_read,
                          kv_bytes_written=bytes_written), submitted


def _layout(model: Transformer) -> tuple[int, ...]:
    c = model.config
    return (c.n_layers, 2, c.n_kv_heads, c.head_dim)


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_p: float = 1.0) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:  # nucleus: keep the most likely tokens whose mass first reaches top_p
        order = np.argsort(-p)
        keep = order[:int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        p_kept = np.zeros_like(p)
        p_kept[keep] = p[keep]
        p = p_kept / p_kept.sum()
    return int(rng.choice(len(p), p=p))


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
