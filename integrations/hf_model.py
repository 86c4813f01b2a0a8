"""`chainfs model build-tiny`: a local Llama model and tokenizer, for machines with no model hub.

Why random weights: the connector and the load test need a real model that vLLM loads from a
directory, not a good one. An `initializer_range` of 0.2 (the default 0.02 makes greedy decoding
repeat one token) gives varied greedy tokens, so a wrong KV block changes the output. The tokenizer
is a byte-level BPE trained on the Python standard library's sources, text every machine has.
"""

from __future__ import annotations

import hashlib
import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

TRAIN_BYTES = 4 << 20  # enough text for a few thousand merges; trains in seconds


@dataclass(frozen=True)
class ModelSize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    max_positions: int


# head_dim 64 for both: a size the CPU attention kernel supports.
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(hidden=128, layers=2, heads=2, kv_heads=1, ffn=256, vocab=4096, max_positions=4096),
    "medium": ModelSize(hidden=1024, layers=8, heads=16, kv_heads=4, ffn=2816, vocab=8192, max_positions=4096),
}


def stdlib_texts(limit: int = TRAIN_BYTES) -> Iterator[str]:
    """The standard library's .py sources, in a fixed order, up to `limit` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield text
        total += len(text)
        if total >= limit:
            return


def build_tokenizer(vocab_size: int):  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(stdlib_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_model(out_dir: str | Path, size: str = "tiny", dtype: str = "float32", seed: int = 0) -> Path:
    """Writes config, safetensors weights and tokenizer into `out_dir`; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} (choose from {', '.join(SIZES)})")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    s = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(s.vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=s.hidden, intermediate_size=s.ffn, num_hidden_layers=s.layers,
        num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, max_position_embeddings=s.max_positions,
        initializer_range=0.2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, torch_dtype=dtype)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    log.info("built %s model in %s: %.1f M parameters, vocab %d", size, out, params / 1e6, len(tokenizer))
    return out


def fingerprint(model_dir: str | Path, sample_bytes: int = 4 << 20) -> str:
    """A cheap identity of a model directory: its config and the first bytes of every weight file
    (different random weights, or a retrained model, differ there). Paths and times are left out,
    so copies of one model on different machines agree."""
    root = Path(model_dir)
    h = hashlib.blake2b(digest_size=8)
    for name in ["config.json", *sorted(p.name for p in root.glob("*.safetensors"))]:
        path = root / name
        if path.is_file():
            with open(path, "rb") as f:
                h.update(name.encode() + b"\0" + f.read(sample_bytes))
    return h.hexdigest()


def model_config(model_dir: str | Path, max_context: int | None = None, kv_itemsize: int = 2):
    """The load test's view of a model directory (layers, heads, KV bytes per token, context).
    vLLM's CPU build runs float32 checkpoints in bfloat16, so its KV has 2-byte items."""
    import json

    from chainfs.engine.presets import ModelConfig

    @dataclass(frozen=True)
    class HFModel(ModelConfig):
        kv_itemsize: int = 2

        @property
        def kv_bytes_per_token(self) -> int:
            return self.n_layers * 2 * self.n_kv_heads * self.head_dim * self.kv_itemsize

    path = Path(model_dir) / "config.json"
    try:
        c = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: build a model with `chainfs model build-tiny DIR`") from None
    heads = int(c["num_attention_heads"])
    head_dim = int(c.get("head_dim") or c["hidden_size"] // heads)
    limit = int(c.get("max_position_embeddings", 2048))
    return HFModel(name=Path(model_dir).name, n_layers=int(c["num_hidden_layers"]), d_model=int(c["hidden_size"]),
                   n_heads=heads, n_kv_heads=int(c.get("num_key_value_heads", heads)), head_dim=head_dim,
                   ffn_dim=int(c["intermediate_size"]), max_context=min(limit, max_context or limit),
                   vocab_size=int(c["vocab_size"]), kv_itemsize=kv_itemsize)
