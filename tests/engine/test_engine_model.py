"""Prefill with cached prefix KV equals prefill from scratch, for both presets."""

from __future__ import annotations

import numpy as np
import pytest

from chainfs.engine.model import Transformer
from chainfs.engine.presets import PRESETS


@pytest.mark.parametrize("model_name, n, prefixes", [
    ("tiny_model", 150, [1, 17, 64, 128, 149]),
    ("small_model", 24, [1, 8, 16, 23]),  # bounded: small costs ~1 ms a token
])
def test_cached_prefill_equals_scratch(request, model_name: str, n: int, prefixes: list[int]) -> None:
    model: Transformer = request.getfixturevalue(model_name)
    toks = np.random.default_rng(7).integers(0, model.config.vocab_size, n)
    full_logits, full_kv = model.prefill(toks, reserve=6)
    scratch_gen = greedy(model, full_logits, full_kv, n, 6)
    for p in prefixes:
        logits, kv = model.prefill(toks, full_kv[:, :, :, :p].copy(), reserve=6)
        assert logits.shape == (n - p, model.config.vocab_size)
        assert np.abs(logits - full_logits[p:]).max() <= 1e-4, f"prefix {p}"
        np.testing.assert_array_equal(logits.argmax(-1), full_logits[p:].argmax(-1))
        assert greedy(model, logits, kv, n, 6) == scratch_gen, f"prefix {p}"


def greedy(model: Transformer, logits: np.ndarray, kv: np.ndarray, pos: int, steps: int) -> list[int]:
    out = [int(logits[-1].argmax())]
    while len(out) < steps:
        out.append(int(model.forward(np.array(out[-1:]), kv, pos)[-1].argmax()))
        pos += 1
    return out


def test_weights_are_deterministic_and_costs_documented() -> None:
    a, b = Transformer(PRESETS["tiny"]), Transformer(PRESETS["tiny"])
    np.testing.assert_array_equal(a.layers[1].wqkv, b.layers[1].wqkv)
    tiny, small = PRESETS["tiny"], PRESETS["small"]
    assert tiny.kv_bytes_per_token == 512 and small.kv_bytes_per_token == 8192
    assert small.flops_per_token(0) > 40e6 and small.flops_per_token(1024) > small.flops_per_token(0)


def test_prefill_rejects_a_fully_cached_prompt(tiny_model: Transformer) -> None:
    toks = np.arange(10)
    _, kv = tiny_model.prefill(toks)
    with pytest.raises(ValueError):
        tiny_model.prefill(toks, kv)
