"""The engine's handle on its KV block store: opened lazily, reopened after failures.

Why: the store may be unreachable when the engine starts, or go away later. The engine must
serve regardless (recomputing everything), count the failure, and use the store again as soon
as it answers. Failures inside an open store are already misses (see KVBlockStore); this
handle covers failing to open it at all.
"""

from __future__ import annotations

import logging
import threading
import time

from chainfs.engine.presets import ModelConfig
from chainfs.kvcache import KVBlockStore, KVNamespace

log = logging.getLogger(__name__)


def namespace_for(config: ModelConfig, block_tokens: int) -> KVNamespace:
    return KVNamespace(model=f"chainfs-engine-{config.name}-seed{config.seed}", dtype="float32",
                     layout=config.layout, block_tokens=block_tokens)


class CacheHandle:
    def __init__(self, url: str, namespace: KVNamespace, capacity_bytes: int | None = None,
                 retry_interval: float = 2.0) -> None:
        self.url = url
        self.namespace = namespace
        self.capacity_bytes = capacity_bytes
        self.retry_interval = retry_interval
        self.open_errors = 0
        self._store: KVBlockStore | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    def get(self) -> KVBlockStore | None:
        """The open store, or None while it cannot be opened (retried every `retry_interval`)."""
        if self._store is not None:
            return self._store
        with self._lock:
            if self._store is None and time.monotonic() >= self._next_try:
                try:
                    self._store = KVBlockStore.from_url(self.url, self.namespace, capacity_bytes=self.capacity_bytes)
                    log.info("kv cache open at %s", self.url)
                except Exception as exc:  # noqa: BLE001 - an engine without its cache still serves
                    self.open_errors += 1
                    self._next_try = time.monotonic() + self.retry_interval
                    log.warning("kv cache %s unavailable: %s: %s", self.url, type(exc).__name__, exc)
        return self._store

    @property
    def errors(self) -> int:
        return self.open_errors + (self._store.stats.errors if self._store else 0)

    def stats(self) -> dict[str, int]:
        out = self._store.stats.snapshot() if self._store else {}
        out["open_errors"] = self.open_errors
        return out
