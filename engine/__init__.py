"""chainfs.engine: a small Llama-style transformer in numpy that reuses prefix KV from chainfs.

Presets (see `presets`): FLOPs per token = 2 x matmul params + 4 x layers x context x heads x head_dim.
    tiny:  0.13 M params, 0.23 MFLOP/token at context 0, KV 512 B/token   (tests)
    small: 24.4 M params, 48.5 MFLOP/token at context 0, KV 8 KiB/token   (prefill >> KV load)
"""

from chainfs.engine.model import Transformer
from chainfs.engine.presets import PRESETS, ModelConfig, get_preset
from chainfs.engine.service import Completion, Engine

__all__ = ["Completion", "Engine", "ModelConfig", "PRESETS", "Transformer", "get_preset"]
