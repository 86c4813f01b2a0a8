"""Chained, stable block keys for token prefixes.

Why chained: the key of block i depends on every token before it, so equal keys mean equal
prefixes and a lookup can stop at the first miss. Why a namespace seed: KV computed by another
model, dtype, KV layout or block size must never be mistaken for ours. Python's `hash()` is salted
per process, so keys use BLAKE2b, which every engine process computes identically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DIGEST_SIZE = 16  # bytes; 128-bit keys make collisions negligible for any realistic cache


@dataclass(frozen=True)
class KVNamespace:
    """Everything that makes two blocks of KV interchangeable (named apart from the metaserver's
    file namespace, `chainfs.metaserver.namespace.Namespace`)."""

    model: str
    dtype: str
    layout: str  # e.g. "L2.KV.H2.T.D16": the tensor layout of one block
    block_tokens: int = 64

    def __post_init__(self) -> None:
        if self.block_tokens <= 0:
            raise ValueError(f"block_tokens must be positive, got {self.block_tokens}")

    @property
    def canonical(self) -> str:
        return f"model={self.model};dtype={self.dtype};layout={self.layout};B={self.block_tokens}"

    @property
    def seed(self) -> bytes:
        return hashlib.blake2b(self.canonical.encode(), digest_size=DIGEST_SIZE,
                               person=b"chainfs-kv-ns").digest()

    @property
    def dirname(self) -> str:
        """Directory name of this namespace in the store: readable prefix plus the seed."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)[:40]
        return f"{safe}-{self.seed.hex()[:16]}"


def token_bytes(tokens: Sequence[int] | np.ndarray) -> bytes:
    """Tokens as little-endian uint32, the one byte form every process hashes."""
    return np.asarray(tokens, dtype="<u4").tobytes()


def salted_seed(namespace: KVNamespace, salt: str | bytes | None = None) -> bytes:
    """The chain's starting value: the namespace seed, mixed with a tenant's salt when there is one
    (vLLM's `cache_salt`), so tenants with different salts never share a block."""
    if not salt:
        return namespace.seed
    raw = salt.encode() if isinstance(salt, str) else bytes(salt)
    return hashlib.blake2b(namespace.seed + raw, digest_size=DIGEST_SIZE, person=b"chainfs-kv-salt").digest()


def block_keys(namespace: KVNamespace, tokens: Sequence[int] | np.ndarray,
               salt: str | bytes | None = None) -> list[bytes]:
    """Keys of the full blocks of `tokens`: h_i = H(h_{i-1} || tokens of block i), h_{-1} = the
    (salted) seed."""
    arr = np.asarray(tokens, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
        raise ValueError("token ids must fit in uint32")
    b = namespace.block_tokens
    raw = token_bytes(arr)  # converted once; block i is raw[i*b*4:(i+1)*b*4]
    step = 4 * b
    prev = salted_seed(namespace, salt)
    keys: list[bytes] = []
    for i in range(len(arr) // b):
        prev = hashlib.blake2b(prev + raw[i * step:(i + 1) * step], digest_size=DIGEST_SIZE).digest()
        keys.append(prev)
    return keys
