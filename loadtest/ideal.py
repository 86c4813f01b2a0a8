"""Offline replay: the token hit rate the same request sequence would get from a prefix cache.

It hashes prompts into blocks exactly as chainfs.kvcache does and replays them in order through an
unlimited cache (the ideal a measured run is compared with) or an LRU cache of a given number of
blocks (the hit-rate-against-capacity curve).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from chainfs.kvcache.hashing import KVNamespace, block_keys
from chainfs.loadtest.workload import Request

REPLAY_NAMESPACE = "offline-replay"


@dataclass
class ReplayResult:
    prompt_tokens: int
    hit_tokens: int
    per_request_hits: list[int]

    @property
    def token_hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def max_reusable(prompt_tokens: int, block_tokens: int) -> int:
    """An engine must compute at least the last prompt token to get logits, so a fully cached
    prompt still recomputes its last block; this is the most a cache can supply."""
    return ((prompt_tokens - 1) // block_tokens) * block_tokens if prompt_tokens else 0


def request_keys(requests: Iterable[Request], block_tokens: int) -> list[list[bytes]]:
    ns = KVNamespace(model=REPLAY_NAMESPACE, dtype="-", layout="-", block_tokens=block_tokens)
    return [block_keys(ns, r.prompt) for r in requests]


def replay(requests: Sequence[Request], block_tokens: int, capacity_blocks: int | None = None,
           keys: list[list[bytes]] | None = None,
           reusable: Callable[[int, int], int] = max_reusable) -> ReplayResult:
    """Hits of each request in order: its leading run of cached blocks, then all its blocks are stored."""
    keys = keys if keys is not None else request_keys(requests, block_tokens)
    cache: OrderedDict[bytes, None] = OrderedDict()
    hits: list[int] = []
    for req, ks in zip(requests, keys):
        limit = reusable(req.prompt_tokens, block_tokens) // block_tokens
        n = 0
        while n < min(limit, len(ks)) and ks[n] in cache:
            n += 1
        hits.append(n * block_tokens)
        for k in ks:
            cache[k] = None
            cache.move_to_end(k)
        if capacity_blocks is not None:
            while len(cache) > capacity_blocks:
                cache.popitem(last=False)
    total = sum(r.prompt_tokens for r in requests)
    return ReplayResult(prompt_tokens=total, hit_tokens=sum(hits), per_request_hits=hits)


def capacity_curve(requests: Sequence[Request], block_tokens: int, points: int = 12,
                   keys: list[list[bytes]] | None = None) -> list[tuple[int, float]]:
    """(capacity in blocks, token hit rate) from a tiny cache up to one holding every block."""
    keys = keys if keys is not None else request_keys(requests, block_tokens)
    distinct = len({k for ks in keys for k in ks}) or 1
    caps = sorted({max(1, round(distinct * (i / points) ** 2)) for i in range(1, points + 1)})
    return [(c, replay(requests, block_tokens, c, keys).token_hit_rate) for c in caps]
