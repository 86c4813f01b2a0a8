"""The parts of ChainfsConnector that do not need vLLM's classes: settings, the store, the blocks'
copies in and out of vLLM's paged KV tensors, and the background saver.

Why these shapes:
- One block file holds one vLLM block for every layer ([layers, kv heads, block tokens, 2 x head
  dim] on the CPU backend), so a prompt of N cached blocks is one batched read, not N x layers.
- A store that fails is skipped for a while (`Breaker`), so a chainfs cluster that is down costs
  the scheduler loop one short deadline, not one per request: its requests see misses and run.
- Saves copy the finished blocks out of the paged tensors in the forward thread (a memcpy, so
  vLLM may reuse the blocks at once); the engine's write-behind queue (`engine/writebehind.py`)
  writes them from a thread of its own and drops (counts) what overflows its byte bound.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import fsspec
import numpy as np

from chainfs.kvcache import KVBlockStore, Lookup, KVNamespace
from chainfs.kvcache.direct import load_into

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectorSettings:
    """`kv_connector_extra_config` of the connector, validated."""

    url: str
    capacity_bytes: int | None = None
    retry_deadline_s: float = 2.0     # a chainfs operation gives up after this long (then: a miss)
    backoff_s: float = 5.0            # after a store failure, skip the store for this long
    max_pending_bytes: int = 256 << 20  # saves queued beyond this are dropped
    model_id: str | None = None       # names the model in block keys (default: from its directory)
    stats_path: str | None = None     # the worker writes its counters here as JSON
    segment_blocks: int | None = 1    # blocks per file (None: the store packs runs; see below)
    save_wait_s: float = 2.0          # a finished request's answer waits this long, at most, for its
                                      # blocks to be in the store (0: answer at once)

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> "ConnectorSettings":
        extra = dict(extra or {})
        url = extra.pop("url", None)
        if not isinstance(url, str) or "://" not in url:
            raise ValueError("kv_connector_extra_config needs a store url: chainfs://HOST:PORT/dir or file:///dir")
        known = {f for f in cls.__dataclass_fields__ if f != "url"}
        unknown = set(extra) - known
        if unknown:
            raise ValueError(f"unknown kv_connector_extra_config keys {sorted(unknown)}; known: url, {sorted(known)}")
        try:
            if extra.get("capacity_bytes") is not None:
                extra["capacity_bytes"] = int(extra["capacity_bytes"])  # JSON may say 1e9
            s = cls(url=url, **extra)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad kv_connector_extra_config: {exc}") from None
        if s.capacity_bytes is not None and s.capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        if s.segment_blocks is not None and (not isinstance(s.segment_blocks, int) or s.segment_blocks < 1):
            raise ValueError("segment_blocks must be a whole number >= 1 (or null)")
        if s.retry_deadline_s <= 0 or s.backoff_s < 0 or s.max_pending_bytes <= 0 or s.save_wait_s < 0:
            raise ValueError("retry_deadline_s and max_pending_bytes must be > 0, backoff_s and save_wait_s >= 0")
        return s


def open_store(settings: ConnectorSettings, namespace: KVNamespace) -> KVBlockStore:
    """The block store of `settings.url`; chainfs operations get the connector's short deadline."""
    options: dict[str, Any] = {}
    if settings.url.startswith("chainfs://"):
        options["retry_deadline"] = settings.retry_deadline_s
    fs, path = fsspec.core.url_to_fs(settings.url, **options)
    if settings.url.startswith("file://"):
        fs.makedirs(path, exist_ok=True)
    # A file per block by default: vLLM reuses any shared prefix, and a packed segment is found only
    # by its last block's key, so a prompt sharing part of a segment (another session's system
    # prompt) would miss what vLLM's own cache would have hit (kvcache/segments.py).
    return KVBlockStore(fs, path, namespace, capacity_bytes=settings.capacity_bytes or None,
                        segment_blocks=settings.segment_blocks)


class Breaker:
    """Open (skip the store) for `backoff_s` after a call that failed; thread-safe."""

    def __init__(self, backoff_s: float) -> None:
        self.backoff_s = backoff_s
        self._until = 0.0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return time.monotonic() < self._until

    def watch(self, store: KVBlockStore) -> "_Watch":
        return _Watch(self, store)

    def trip(self) -> None:
        with self._lock:
            self._until = time.monotonic() + self.backoff_s


class _Watch:
    """`with breaker.watch(store):` trips the breaker when the store counted an error inside."""

    def __init__(self, breaker: Breaker, store: KVBlockStore) -> None:
        self.breaker, self.store = breaker, store

    def __enter__(self) -> None:
        self.errors = self.store.stats.errors

    def __exit__(self, *exc: object) -> None:
        if self.store.stats.errors != self.errors:
            self.breaker.trip()


# -- messages between the scheduler side and the worker side (pickled when they are processes) --

@dataclass
class LoadJob:
    req_id: str
    keys: list[bytes]        # keys of the blocks to load, in order
    refs: tuple[Any, ...]    # what the lookup's stat found for them (kvcache BlockRefs)
    block_ids: list[int]     # vLLM blocks they go into


@dataclass
class SaveJob:
    req_id: str
    keys: list[bytes]        # keys of the blocks this step finished
    block_ids: list[int]     # the vLLM blocks holding them


@dataclass
class Counters:
    """The connector's own counters (one side each; the worker's go to `stats_path`)."""

    lookups: int = 0
    lookup_skipped: int = 0      # lookups not made: the store was failing (breaker open)
    lookup_hit_tokens: int = 0   # tokens the store held at lookup
    external_tokens: int = 0     # tokens vLLM asked us to load (beyond its own memory)
    local_tokens: int = 0        # tokens vLLM found in its own prefix cache
    loaded_tokens: int = 0       # tokens actually loaded (worker)
    load_failed_blocks: int = 0  # blocks that failed to load and were recomputed (worker)
    dropped_saves: int = 0       # save jobs not queued: the store was failing (worker)
    load_s: float = 0.0          # worker time spent loading
    lookup_s: float = 0.0        # scheduler time spent in lookups (hashing and the store's stat)
    save_waits: int = 0          # finished requests whose answer waited for their blocks (scheduler)
    save_wait_s: float = 0.0     # time those answers waited
    save_wait_timeouts: int = 0  # answers sent when save_wait_s ran out first
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


# -- copies between block files and vLLM's paged KV tensors ---------------------------------------

class PagedKV:
    """vLLM's per-layer paged KV tensors, seen as whole blocks across layers."""

    def __init__(self, kv_caches: dict[str, Any], num_blocks: int, expected_block_shape: Sequence[int]) -> None:
        import torch
        from vllm.model_executor.models.utils import extract_layer_index

        names = sorted(kv_caches, key=extract_layer_index)
        self.layers = [kv_caches[n] for n in names]
        first = self.layers[0]
        for name, t in zip(names, self.layers):
            if t.shape != first.shape or t.dtype != first.dtype:
                raise ValueError(f"layer {name} has KV shape {tuple(t.shape)}, others {tuple(first.shape)}")
        if first.shape[0] != num_blocks or tuple(first.shape[1:]) != tuple(expected_block_shape):
            raise ValueError(f"unexpected paged KV shape {tuple(first.shape)}: chainfs expects "
                             f"[{num_blocks}, {', '.join(map(str, expected_block_shape))}] (blocks first)")
        self.dtype = first.dtype
        self.raw = torch.int16 if first.dtype == torch.bfloat16 else first.dtype  # numpy has no bf16
        self.block_shape = (len(self.layers), *expected_block_shape)
        # layer l of block k is one contiguous run of memory: a block file's payload ([layers, ...])
        # is copied straight into those runs (kvcache.direct.load_into), with no array in between
        self.direct = all(t.is_contiguous() for t in self.layers)

    def gather(self, block_ids: Sequence[int]) -> np.ndarray:
        """A copy of the blocks, [n, layers, ...], detached from vLLM's memory (one copy)."""
        import torch

        out = torch.empty((len(block_ids), *self.block_shape), dtype=self.dtype)
        for layer, t in enumerate(self.layers):
            for i, block_id in enumerate(block_ids):
                out[i, layer].copy_(t[block_id])
        return out.view(self.raw).numpy()

    def block_views(self, block_id: int) -> list[memoryview]:
        """Writable byte views of block `block_id` in each layer, in layer order: a block file's
        payload, split where its layers meet."""
        return [memoryview(t[block_id].view(self.raw).numpy()).cast("B") for t in self.layers]

    def scatter(self, block_ids: Sequence[int], blocks: Sequence[np.ndarray]) -> None:
        import torch

        idx = torch.tensor(list(block_ids), dtype=torch.long)
        src = torch.from_numpy(np.stack(blocks)).view(self.dtype)
        for layer, t in enumerate(self.layers):
            t.index_copy_(0, idx, src[:, layer])

    def fits(self, block: np.ndarray) -> bool:
        return tuple(block.shape) == self.block_shape and block.dtype == np.dtype(_np_dtype(self.raw))


def _np_dtype(torch_dtype: Any) -> str:
    return str(torch_dtype).replace("torch.", "")


# -- the worker's counters, as a file other processes read --------------------------------------

class StatsFile:
    """Writes the worker's counters to `path` as JSON twice a second while they change (a load test
    or test reads them; the worker may be idle when its last save lands)."""

    def __init__(self, path: str, snapshot: Callable[[], dict[str, Any]], interval: float = 0.5) -> None:
        self.path, self.snapshot, self.interval = path, snapshot, interval
        self._stop = threading.Event()
        self._last: str | None = None
        self._thread = threading.Thread(target=self._run, name="chainfs-kv-stats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def write(self) -> None:
        text = json.dumps(self.snapshot())
        if text == self._last:
            return
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            Path(tmp).write_text(text)
            os.replace(tmp, self.path)
            self._last = text
        except OSError as exc:
            log.warning("cannot write connector stats to %s: %s", self.path, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.write()


def scheduler_stats_path(stats_path: str) -> str:
    """Where the scheduler side writes its counters, beside the worker's `stats_path` (vLLM runs the
    two sides in two processes)."""
    return f"{stats_path.removesuffix('.json')}.scheduler.json"


def load_blocks(store: KVBlockStore, breaker: Breaker, job: LoadJob, paged: PagedKV) -> int:
    """Loads the leading blocks of `job` that read and verify into vLLM's blocks; returns how many
    (0 while the store is failing). The lookup's refs ride along, so on chainfs this is one batched
    read and no stat; each layer's part of a block file lands in that layer's slot directly."""
    if breaker.open or not job.keys:
        return 0
    found = Lookup(list(job.keys), len(job.keys), store.block_tokens, tuple(job.refs))
    with breaker.watch(store):
        if paged.direct:
            return load_into(store, found, [paged.block_views(b) for b in job.block_ids[:len(job.keys)]])
        blocks = store.load(found)
    blocks = blocks[:next((i for i, blk in enumerate(blocks) if not paged.fits(blk)), len(blocks))]
    if blocks:
        paged.scatter(job.block_ids[:len(blocks)], blocks)
    return len(blocks)
