"""Model presets and their costs.

FLOPs per token (forward, counting a multiply-add as 2) at context c:
    2 * matmul params  +  4 * layers * c * (heads * head_dim)     (QK^T and AV)
KV bytes per token: layers * 2 (K and V) * kv_heads * head_dim * 4 (float32).

| preset | layers | d_model | heads / kv heads | ffn  | params  | GFLOP/token (c=0 / c=1024) | KV bytes/token |
| ------ | ------ | ------- | ---------------- | ---- | ------- | -------------------------- | -------------- |
| tiny   | 2      | 64      | 4 / 2            | 192  | 0.13 M  | 0.00023 / 0.00075          | 512            |
| small  | 8      | 512     | 8 / 2            | 1536 | 24.4 M  | 0.0485 / 0.0653            | 8,192 (8 KiB)  |

`small` does ~49 MFLOP per token against 8 KiB of KV: about 5.9 kFLOP per KV byte. At the tens of
GFLOP/s numpy reaches on 2 cores, prefilling a token costs ~1-3 ms, while reading its 8 KiB from
chainfs at hundreds of MB/s costs ~20-40 us: loading cached KV is ~50x cheaper than recomputing it.
(`python -m chainfs.engine.presets` prints these figures.)
"""

from __future__ import annotations

from dataclasses import dataclass

from chainfs.engine.tokenizer import VOCAB_SIZE


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    max_context: int
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads (grouped-query attention)")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (rotary positions rotate pairs)")

    @property
    def layout(self) -> str:
        """The KV layout of one block: (layers, K/V, kv heads, tokens, head_dim), float32."""
        return f"L{self.n_layers}.KV.H{self.n_kv_heads}.T.D{self.head_dim}"

    @property
    def matmul_params(self) -> int:
        """Parameters that multiply each token's activations (all but the embedding table)."""
        attn = self.d_model * (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        attn += self.n_heads * self.head_dim * self.d_model
        mlp = 3 * self.d_model * self.ffn_dim
        return self.n_layers * (attn + mlp) + self.d_model * self.vocab_size

    @property
    def params(self) -> int:
        norms = (2 * self.n_layers + 1) * self.d_model
        return self.matmul_params + self.vocab_size * self.d_model + norms

    def flops_per_token(self, context: int = 0) -> int:
        return 2 * self.matmul_params + 4 * self.n_layers * context * self.n_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> int:
        return self.n_layers * 2 * self.n_kv_heads * self.head_dim * 4


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig("tiny", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16,
                        ffn_dim=192, max_context=1024),
    "small": ModelConfig("small", n_layers=8, d_model=512, n_heads=8, n_kv_heads=2, head_dim=64,
                         ffn_dim=1536, max_context=2048),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})") from None


if __name__ == "__main__":
    for cfg in PRESETS.values():
        print(f"{cfg.name}: params {cfg.params / 1e6:.3f} M, GFLOP/token c=0 {cfg.flops_per_token(0) / 1e9:.5f}, "
              f"c=1024 {cfg.flops_per_token(1024) / 1e9:.5f}, KV bytes/token {cfg.kv_bytes_per_token}")
