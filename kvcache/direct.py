"""Reads for an engine that keeps its KV in memory of its own (vLLM's paged tensors).

Why: `KVBlockStore.load` hands out one fresh array per block, which such an engine must then copy
again into its own layout (for vLLM: stack, then one copy per layer). `load_into` instead reads
every hit stretch into a buffer the store keeps from one load to the next (the batched, chunk-
aligned read chainfs serves from local chunk files without a scratch copy, into memory that costs
no fresh page faults), verifies each block there, and copies each block's payload straight into
the engine's views: one copy between file and engine. `stored_prefix` lets a writer check that its
blocks landed (an engine that holds an answer until then) without counting lookups.
"""

from __future__ import annotations

import threading
import weakref
from typing import Sequence

import numpy as np

from chainfs.kvcache import blockformat
from chainfs.kvcache.backends import BlockRef, batch_buffers
from chainfs.kvcache.blockformat import CorruptBlock
from chainfs.kvcache.segments import ranges
from chainfs.kvcache.store import KVBlockStore, Lookup, _name

_SCRATCH: "weakref.WeakKeyDictionary[KVBlockStore, memoryview]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # one load_into at a time per process shares the scratch buffers


def stored_prefix(store: KVBlockStore, keys: list[bytes]) -> int:
    """How many leading `keys` are in the store (cached refs, else one batched stat); unlike
    `lookup`, not counted as a query."""
    refs = store._refs_of(keys, "lookup")
    return next((i for i, r in enumerate(refs) if r is None), len(refs))


def load_into(store: KVBlockStore, found: Lookup, dests: Sequence[Sequence[memoryview]]) -> int:
    """Loads the leading hit blocks into `dests[i]`: writable byte views that, in order, make up
    block i's payload (an engine's per-layer slots of one block). Returns how many leading blocks
    were read, verified and copied; the views of the others are left as they were."""
    n = min(found.hit_blocks, len(dests))
    keys, refs = found.keys[:n], list(found.refs[:n])
    if len(refs) < n:  # a Lookup made without refs: find them (one batched stat)
        refs += store._refs_of(keys[len(refs):], "load")
    sizes = [blockformat.HEADER_SIZE + sum(len(v) for v in d) for d in dests[:n]]
    n = next((i for i, (r, size) in enumerate(zip(refs, sizes)) if r is None or r.size != size), n)
    if n == 0:
        return 0
    stretches = ranges(refs[:n])  # type: ignore[arg-type]
    with _LOCK:
        total = sum(r.size for r, _ in stretches)
        scratch = _SCRATCH.get(store)
        if scratch is None or len(scratch) < total:
            scratch = _SCRATCH[store] = batch_buffers([total])[0]
        views, at = [], 0
        for stretch, _ in stretches:
            views.append(scratch[at:at + stretch.size])
            at += stretch.size
        try:
            errors = store.backend.read_many_into([r for r, _ in stretches], views)
        except Exception as exc:  # noqa: BLE001 - any backend failure is a miss
            store._backend_error("load", exc)
            return 0
        good = _copy_out(store, keys, stretches, views, errors, dests)
    for later in keys[good:]:  # blocks past a bad one: ask the store again next time
        store._refs.pop(later)
    store.stats.add(loaded_blocks=good, loaded_tokens=good * store.block_tokens, bytes_read=sum(sizes[:good]))
    return good


def _copy_out(store: KVBlockStore, keys: list[bytes], stretches: list[tuple[BlockRef, int]],
              views: list[memoryview], errors: list[Exception | None], dests: Sequence[Sequence[memoryview]]) -> int:
    """Verifies the stretches' blocks in order and copies each into its views; how many made it."""
    at = 0
    for (stretch, count), view, err in zip(stretches, views, errors):
        if err is not None:
            if isinstance(err, FileNotFoundError):
                store.stats.add(load_missing=1)
                store._forget(keys[at], stretch.path)
            elif isinstance(err, EOFError):  # the file is shorter than it was: cut or replaced
                store._corrupt(stretch.path, keys[at], CorruptBlock(str(err)))
            else:
                store._backend_error("load", err)
                store._forget(keys[at], stretch.path)
            return at
        size = stretch.size // count
        for j in range(count):
            try:
                arr = blockformat.decode(view[j * size:(j + 1) * size], keys[at], copy=False)
            except CorruptBlock as exc:
                store._corrupt(stretch.path, keys[at], exc)
                return at
            src, pos = memoryview(np.ascontiguousarray(arr)).cast("B"), 0
            for dest in dests[at]:
                dest[:] = src[pos:pos + len(dest)]
                pos += len(dest)
            at += 1
        store.index.refresh(_name(stretch.path))
    return at
