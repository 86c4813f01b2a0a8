"""A decoder-only, Llama-style transformer in numpy: RMSNorm, rotary positions, grouped-query
attention and SwiGLU, with weights drawn from a fixed seed.

Why it matters here: `forward` takes KV already computed for a prefix (e.g. loaded from chainfs)
and computes only the remaining tokens, so a cached prefix skips its prefill. Prefill and decode
are one code path over a preallocated KV buffer, which is what makes cached and uncached prefill
agree to float32 rounding.

KV tensor layout: (layers, 2 [K, V], kv_heads, tokens, head_dim), float32; keys stored after RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chainfs.engine.presets import ModelConfig

F32 = np.float32


@dataclass
class Layer:
    attn_norm: np.ndarray
    wqkv: np.ndarray  # (d_model, (heads + 2 kv_heads) * head_dim)
    wo: np.ndarray
    mlp_norm: np.ndarray
    w_gate_up: np.ndarray  # (d_model, 2 * ffn)
    w_down: np.ndarray


class Transformer:
    def __init__(self, config: ModelConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng(c.seed)

        def weight(fan_in: int, fan_out: int) -> np.ndarray:
            return (rng.standard_normal((fan_in, fan_out), dtype=F32) / np.sqrt(fan_in)).astype(F32)

        self.embed = (rng.standard_normal((c.vocab_size, c.d_model), dtype=F32)).astype(F32)
        qkv = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim
        self.layers = [
            Layer(attn_norm=np.ones(c.d_model, F32), wqkv=weight(c.d_model, qkv),
                  wo=weight(c.n_heads * c.head_dim, c.d_model), mlp_norm=np.ones(c.d_model, F32),
                  w_gate_up=weight(c.d_model, 2 * c.ffn_dim), w_down=weight(c.ffn_dim, c.d_model))
            for _ in range(c.n_layers)
        ]
        self.final_norm = np.ones(c.d_model, F32)
        self.lm_head = weight(c.d_model, c.vocab_size)
        inv_freq = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))
        angles = np.outer(np.arange(c.max_context, dtype=np.float64), inv_freq)
        self._cos, self._sin = np.cos(angles).astype(F32), np.sin(angles).astype(F32)

    def new_kv(self, tokens: int) -> np.ndarray:
        c = self.config
        return np.zeros((c.n_layers, 2, c.n_kv_heads, tokens, c.head_dim), dtype=F32)

    def forward(self, tokens: np.ndarray, kv: np.ndarray, start: int) -> np.ndarray:
        """Runs `tokens` at positions start.. with `kv[..., :start, :]` holding the prefix's KV;
        writes their K/V into `kv[..., start:start+n, :]` and returns their logits (n, vocab)."""
        c = self.config
        n = len(tokens)
        end = start + n
        if end > kv.shape[3] or end > c.max_context:
            raise ValueError(f"{end} tokens exceed the KV buffer or the context ({c.max_context})")
        pos = np.arange(start, end)
        cos, sin = self._cos[pos], self._sin[pos]
        groups = c.n_heads // c.n_kv_heads
        # causal mask over the whole attended range: query at p sees keys 0..p
        mask = np.arange(end)[None, :] > pos[:, None]
        x = self.embed[np.asarray(tokens)]
        scale = F32(1.0 / np.sqrt(c.head_dim))
        for li, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.attn_norm, c.norm_eps) @ layer.wqkv
            q = h[:, :c.n_heads * c.head_dim].reshape(n, c.n_heads, c.head_dim).transpose(1, 0, 2)
            k = h[:, c.n_heads * c.head_dim:(c.n_heads + c.n_kv_heads) * c.head_dim]
            v = h[:, (c.n_heads + c.n_kv_heads) * c.head_dim:]
            k = k.reshape(n, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
            kv[li, 0, :, start:end] = _rope(k, cos, sin)
            kv[li, 1, :, start:end] = v.reshape(n, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
            q = _rope(q, cos, sin).reshape(c.n_kv_heads, groups * n, c.head_dim)
            keys, values = kv[li, 0, :, :end], kv[li, 1, :, :end]
            scores = (q @ keys.transpose(0, 2, 1)) * scale  # (kv_heads, groups*n, end)
            scores = scores.reshape(c.n_kv_heads, groups, n, end)
            scores[..., mask] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            att = scores.reshape(c.n_kv_heads, groups * n, end) @ values  # (kv_heads, groups*n, hd)
            att = att.reshape(c.n_heads, n, c.head_dim).transpose(1, 0, 2).reshape(n, -1)
            x = x + att @ layer.wo
            gate_up = _rms_norm(x, layer.mlp_norm, c.norm_eps) @ layer.w_gate_up
            gate, up = gate_up[:, :c.ffn_dim], gate_up[:, c.ffn_dim:]
            x = x + (_silu(gate) * up) @ layer.w_down
        return _rms_norm(x, self.final_norm, c.norm_eps) @ self.lm_head

    def prefill(self, tokens: np.ndarray | list[int], cached_kv: np.ndarray | None = None,
                reserve: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Logits of the tokens not covered by `cached_kv` (shape (n - P, vocab)) and a KV buffer
        of n + reserve tokens whose first n are filled. `cached_kv` covers tokens[:P]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        p = 0 if cached_kv is None else cached_kv.shape[3]
        if p >= len(tokens):
            raise ValueError("at least one token must be computed after the cached prefix")
        kv = self.new_kv(len(tokens) + reserve)
        if p:
            kv[:, :, :, :p] = cached_kv
        return self.forward(tokens[p:], kv, p), kv


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(eps)) * weight


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE on (heads, n, head_dim) with (n, head_dim/2) tables."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate((x1 * cos - x2 * sin, x1 * sin + x2 * cos), axis=-1)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (F32(1.0) + np.exp(-x))
