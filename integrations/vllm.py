"""ChainfsConnector: vLLM keeps its prefix KV in chainfs (or any fsspec store), shared by instances.

    python -m vllm.entrypoints.openai.api_server --model DIR --kv-transfer-config '{
        "kv_connector": "ChainfsConnector", "kv_connector_module_path": "chainfs.integrations.vllm",
        "kv_role": "kv_both", "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"url": "chainfs://127.0.0.1:PORT/kv", "capacity_bytes": 1073741824}}'

How it fits vLLM's KVConnectorBase_V1 (vllm/distributed/kv_transfer/kv_connector/v1/base.py):
- Keys: a vLLM block of B tokens is one block file, keyed by the chained hash of the prompt's
  tokens (chainfs.kvcache), seeded by the model, KV dtype, KV layout and block size, and salted by
  the request's `cache_salt` (tenants with different salts never share a block).
- Scheduler side: `get_num_new_matched_tokens` probes every full block of the prompt in one round
  trip and offers what lies beyond vLLM's own prefix-cache hit; `build_connector_meta` tells the
  worker which blocks to load into which vLLM blocks, and which newly finished blocks to save.
- Worker side: `start_load_kv` loads the hit blocks (one batched read) into the allocated blocks
  before the forward pass; `wait_for_save` copies the blocks the step finished out of the paged
  tensors and a background thread writes them, so the forward pass never waits on the store.
- Failures: a store that fails is a miss. A lookup that fails offers nothing; a load that fails
  reports its blocks through `get_block_ids_with_load_errors` and vLLM recomputes them (the
  connector sets `kv_load_failure_policy` to "recompute": a cache miss must not fail a request).
- Counters: each finished request returns `kv_transfer_params["chainfs"]` (tokens from vLLM's own
  memory, from chainfs, loaded); the worker writes its totals to `stats_path` when configured.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorWorkerMetadata,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from chainfs.engine.writebehind import WriteBehind
from chainfs.integrations.hf_model import fingerprint
from chainfs.integrations.vllm_support import (Breaker, ConnectorSettings, Counters, LoadJob, PagedKV, SaveJob,
                                               StatsFile, load_blocks, open_store, scheduler_stats_path)
from chainfs.kvcache import KVNamespace, block_keys
from chainfs.kvcache.direct import stored_prefix

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

log = logging.getLogger(__name__)
_COUNTERS: dict[str, Counters] = {}


@dataclass
class ChainfsMetadata(KVConnectorMetadata):
    loads: list[LoadJob] = field(default_factory=list)
    saves: list[SaveJob] = field(default_factory=list)


@dataclass
class ChainfsWorkerMetadata(KVConnectorWorkerMetadata):
    """What the worker's loads gave, per request, back to the scheduler side."""

    loaded_tokens: dict[str, int] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    unsaved: set[str] = field(default_factory=set)  # requests whose saves the worker dropped

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        if isinstance(other, ChainfsWorkerMetadata):
            for k, v in other.loaded_tokens.items():
                self.loaded_tokens[k] = self.loaded_tokens.get(k, 0) + v
            for k, t in other.load_s.items():
                self.load_s[k] = self.load_s.get(k, 0.0) + t
            self.unsaved |= other.unsaved
        return self


@dataclass
class _Req:
    """Scheduler-side state of one request."""

    request: Request
    keys: list[bytes] = field(default_factory=list)  # keys of the request's leading full blocks
    block_ids: list[int] = field(default_factory=list)
    stored_blocks: int = 0       # leading blocks known to be in the store, or already sent to be saved
    load: LoadJob | None = None  # waiting to be sent to the worker
    load_first: int = 0          # index of the first block of `load` in the request
    load_planned: int = 0        # tokens of the load sent to the worker, until it reports back
    sent: list[bytes] = field(default_factory=list)  # keys this request sent to be saved
    unsaved: bool = False        # the worker dropped some of them: nothing to wait for
    local_tokens: int = 0
    external_tokens: int = 0
    loaded_tokens: int = 0
    lookup_s: float = 0.0
    load_s: float = 0.0


def namespace_for(vllm_config: VllmConfig, settings: ConnectorSettings) -> tuple[KVNamespace, tuple[int, ...]]:
    """The key namespace and the per-layer shape of one block, from the model and cache config."""
    mc, pc, cc = vllm_config.model_config, vllm_config.parallel_config, vllm_config.cache_config
    if pc.tensor_parallel_size * pc.pipeline_parallel_size != 1:
        raise ValueError("ChainfsConnector supports one worker (tensor and pipeline parallel size 1)")
    layers, heads, head = mc.get_num_layers(pc), mc.get_num_kv_heads(pc), mc.get_head_size()
    block = cc.block_size
    dtype = str(mc.dtype).replace("torch.", "") if cc.cache_dtype == "auto" else str(cc.cache_dtype)
    model_id = settings.model_id
    if not model_id:
        path = Path(mc.model)
        model_id = f"{path.name}-{fingerprint(path)}" if path.is_dir() else f"{mc.model}@{mc.revision or 'main'}"
    layout = f"LBHNC.L{layers}.H{heads}.N{block}.C{2 * head}"
    return KVNamespace(model=model_id, dtype=dtype, layout=layout, block_tokens=block), (heads, block, 2 * head)


class ChainfsConnector(KVConnectorBase_V1):
    """vLLM KV connector over chainfs.kvcache; see the module docstring."""

    _cache_hit_source = CacheHitSource.DISK

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole,
                 kv_cache_config: KVCacheConfig | None = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        tc = self._kv_transfer_config
        self.settings = ConnectorSettings.from_extra(tc.kv_connector_extra_config)
        if kv_cache_config is not None and len(kv_cache_config.kv_cache_groups) != 1:
            raise ValueError("ChainfsConnector supports models with one KV cache group (full attention)")
        if tc.kv_load_failure_policy != "recompute":
            log.info("ChainfsConnector: kv_load_failure_policy set to 'recompute' (a failed load is a miss)")
            tc.kv_load_failure_policy = "recompute"
        self.namespace, self._block_shape = namespace_for(vllm_config, self.settings)
        self.block_tokens = self.namespace.block_tokens
        self.store = open_store(self.settings, self.namespace)
        self.breaker = Breaker(self.settings.backoff_s)
        # one set per engine and process: when the scheduler and the worker share a process
        # (VLLM_ENABLE_V1_MULTIPROCESSING=0) the scheduler's counters (lookups, local and external
        # tokens) land in the worker's stats file too; otherwise that file has the worker's only
        self.counters = _COUNTERS.setdefault(str(tc.engine_id), Counters())
        self._num_blocks = kv_cache_config.num_blocks if kv_cache_config is not None else 0
        # scheduler side
        self._reqs: dict[str, _Req] = {}
        self._lookups: dict[str, tuple[list[bytes], tuple[Any, ...], int, float]] = {}  # keys, refs, local, s
        # worker side
        self._paged: PagedKV | None = None
        self._writer: WriteBehind | None = None
        self._stats_file: StatsFile | None = None
        if role == KVConnectorRole.SCHEDULER and self.settings.stats_path:  # lookups and answer waits
            self._stats_file = StatsFile(scheduler_stats_path(self.settings.stats_path),
                                         lambda: {"pid": os.getpid(), "connector": self.counters.snapshot()})
        self._store_errors = 0
        self._failed_block_ids: set[int] = set()
        self._loaded: dict[str, int] = {}
        self._load_s: dict[str, float] = {}
        self._unsaved: set[str] = set()
        log.info("ChainfsConnector (%s) on %s, namespace %s", role.name, self.settings.url, self.namespace.canonical)

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a cache: a dropped save is a future miss

    # ==== scheduler side ========================================================================

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        """Tokens beyond vLLM's own hit that the store holds: one batched header probe."""
        prompt = request.prompt_token_ids
        if not prompt:
            return 0, False
        usable = (len(prompt) - 1) // self.block_tokens  # the last prompt token is always computed
        if usable == 0:
            return 0, False
        t0 = time.perf_counter()
        head = prompt[:usable * self.block_tokens]
        keys = self.store.keys_of(head, request.cache_salt)
        if self.breaker.open:
            self.counters.add(lookup_skipped=1)
            self._lookups[request.request_id] = (keys, (), num_computed_tokens, 0.0)
            return 0, False
        with self.breaker.watch(self.store):
            found = self.store.lookup(head, keys=keys)
        took = time.perf_counter() - t0
        self.counters.add(lookups=1, lookup_hit_tokens=found.hit_tokens, lookup_s=took)
        self._lookups[request.request_id] = (keys, found.refs, num_computed_tokens, took)
        return max(0, found.hit_tokens - num_computed_tokens), False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        keys, refs, local, took = self._lookups.pop(request.request_id, ([], (), request.num_computed_tokens, 0.0))
        st = self._reqs.get(request.request_id)
        if st is None:
            st = self._reqs[request.request_id] = _Req(request)
        st.lookup_s += took
        if len(keys) > len(st.keys):
            st.keys = keys
        st.block_ids = list(blocks.get_block_ids()[0])
        st.stored_blocks = max(st.stored_blocks, len(refs))
        st.local_tokens = local
        if num_external_tokens > 0:
            first, n = local // self.block_tokens, num_external_tokens // self.block_tokens
            st.load = LoadJob(request.request_id, keys[first:first + n], tuple(refs[first:first + n]), [])
            st.load_first = first
            st.external_tokens += num_external_tokens
            self.counters.add(external_tokens=num_external_tokens)
        self.counters.add(local_tokens=local)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = ChainfsMetadata()
        for new in scheduler_output.scheduled_new_reqs:
            st = self._reqs.get(new.req_id)
            if st is None:
                continue
            st.block_ids = list(new.block_ids[0])
            done = new.num_computed_tokens + scheduler_output.num_scheduled_tokens.get(new.req_id, 0)
            self._plan(st, done, meta)
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            st = self._reqs.get(req_id)
            if st is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids and new_ids is not None:
                st.block_ids = list(new_ids[0])
            elif new_ids is not None:
                st.block_ids.extend(new_ids[0])
            done = cached.num_computed_tokens[i] + scheduler_output.num_scheduled_tokens.get(req_id, 0)
            self._plan(st, done, meta)
        return meta

    def _plan(self, st: _Req, done: int, meta: ChainfsMetadata) -> None:
        """Adds this request's pending load, and the blocks this step finishes, to `meta`."""
        b = self.block_tokens
        if st.load is not None:
            n = len(st.load.keys)
            st.load.block_ids = st.block_ids[st.load_first:st.load_first + n]
            st.load_planned = n * b
            meta.loads.append(st.load)
            st.load = None
        tokens = st.request.all_token_ids
        full = min(done, len(tokens), len(st.block_ids) * b) // b
        if full > st.stored_blocks:
            if full > len(st.keys):  # blocks past the prompt's (decoded tokens): extend the chain
                st.keys = block_keys(self.namespace, list(tokens[:full * b]), st.request.cache_salt)
            job = SaveJob(st.request.request_id, st.keys[st.stored_blocks:full], st.block_ids[st.stored_blocks:full])
            meta.saves.append(job)
            st.sent.extend(job.keys)
            st.stored_blocks = full

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        meta = connector_output.kv_connector_worker_meta
        if isinstance(meta, ChainfsWorkerMetadata):
            for req_id in meta.unsaved:
                if req_id in self._reqs:
                    self._reqs[req_id].unsaved = True
            for req_id, n in meta.loaded_tokens.items():
                st = self._reqs.get(req_id)
                if st is None:
                    continue
                st.loaded_tokens += n
                st.load_s += meta.load_s.get(req_id, 0.0)
                if n < st.load_planned:  # vLLM recomputes the rest: save those blocks again
                    st.stored_blocks = min(st.stored_blocks, st.load_first + n // self.block_tokens)
                st.load_planned = 0

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        """Called before vLLM sends the request's last output: the answer waits (bounded) until the
        blocks it sent to be saved are in the store, so that its next turn finds them on any server."""
        self._lookups.pop(request.request_id, None)
        st = self._reqs.pop(request.request_id, None)
        if st is None:
            return False, None
        waited = self._wait_saved(st)
        return False, {"chainfs": {"local_tokens": st.local_tokens, "external_tokens": st.external_tokens,
                                   "loaded_tokens": st.loaded_tokens, "lookup_ms": round(1000 * st.lookup_s, 3),
                                   "load_ms": round(1000 * st.load_s, 3), "save_wait_ms": round(1000 * waited, 3)}}

    def _wait_saved(self, st: _Req) -> float:
        """Polls the store until every block `st` sent is there, the store fails, or save_wait_s
        passed; returns the time waited. This holds vLLM's engine loop (its only place to hold an
        answer back), so it happens once, as the request finishes, after its decoding overlapped
        with the writes."""
        keys, limit = st.sent, self.settings.save_wait_s
        if not keys or limit <= 0 or st.unsaved:
            return 0.0
        t0 = time.monotonic()
        delay = 0.002
        while not self.breaker.open:
            with self.breaker.watch(self.store):
                keys = keys[stored_prefix(self.store, keys):]
            if not keys:
                break
            if time.monotonic() - t0 + delay > limit:
                self.counters.add(save_wait_timeouts=1)
                log.info("chainfs: blocks of %s not stored within %.1f s: answering", st.request.request_id, limit)
                break
            time.sleep(delay)
            delay = min(2 * delay, 0.02)
        waited = time.monotonic() - t0
        self.counters.add(save_waits=1, save_wait_s=waited)
        return waited

    # ==== worker side ===========================================================================

    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self._paged = PagedKV(kv_caches, self._num_blocks, self._block_shape)
        self._writer = WriteBehind(self.settings.max_pending_bytes)
        if self.settings.stats_path:
            self._stats_file = StatsFile(self.settings.stats_path, self.worker_stats)

    def worker_stats(self) -> dict[str, Any]:
        """The worker's counters: the connector's, its write-behind's and its store's."""
        return {"pid": os.getpid(), "connector": self.counters.snapshot(),
                "write_behind": self._writer.stats.snapshot() if self._writer else {},
                "store": self.store.stats.snapshot()}

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, ChainfsMetadata) or not meta.loads or self._paged is None:
            return
        for job in meta.loads:
            t0 = time.perf_counter()
            try:
                n = load_blocks(self.store, self.breaker, job, self._paged)
            except Exception:  # noqa: BLE001 - the blocks are recomputed instead
                log.exception("chainfs KV load failed")
                n = 0
            failed = job.block_ids[n:]
            self._failed_block_ids.update(failed)
            loaded, took = n * self.block_tokens, time.perf_counter() - t0
            self._loaded[job.req_id] = self._loaded.get(job.req_id, 0) + loaded
            self._load_s[job.req_id] = self._load_s.get(job.req_id, 0.0) + took
            self.counters.add(loaded_tokens=loaded, load_failed_blocks=len(failed), load_s=took)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # start_load_kv loaded every layer before the forward pass

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        return  # whole blocks (all layers) are saved in wait_for_save

    def wait_for_save(self) -> None:
        meta = self._connector_metadata
        if not isinstance(meta, ChainfsMetadata) or not meta.saves or self._paged is None or self._writer is None:
            return
        errors = self.store.stats.errors  # the writer's failures since the last step
        if errors != self._store_errors:
            self._store_errors = errors
            self.breaker.trip()
        for job in meta.saves:
            if self.breaker.open:
                self.counters.add(dropped_saves=1)
                self._unsaved.add(job.req_id)
                continue
            done = self._writer.submit(self.store, job.keys, list(self._paged.gather(job.block_ids)), copy=False)
            if done.queued + done.duplicates < len(job.keys):
                self._unsaved.add(job.req_id)  # the queue was full: its answer need not wait

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed_block_ids = self._failed_block_ids, set()
        return failed

    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        if not self._loaded and not self._unsaved:
            return None
        meta = ChainfsWorkerMetadata(self._loaded, self._load_s, self._unsaved)
        self._loaded, self._load_s, self._unsaved = {}, {}, set()
        return meta

    def shutdown(self) -> None:
        if self._writer is not None:
            self._writer.close(timeout=10.0)
        if self._stats_file is not None:
            self._stats_file.close()
