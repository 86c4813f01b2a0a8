"""Request parsing and validation for /v1/completions, and the response body (OpenAI-shaped).

Kept apart from HTTP so the rules can be tested and reused without a server.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from chainfs.engine import tokenizer
from chainfs.engine.presets import ModelConfig
from chainfs.engine.service import Completion

DEFAULT_MAX_TOKENS = 16


class BadRequest(ValueError):
    """The client's fault: answered with HTTP 400 and this message."""


@dataclass(frozen=True)
class CompletionRequest:
    prompt: list[int]
    max_tokens: int
    temperature: float
    seed: int | None


def parse_completion(body: bytes, config: ModelConfig) -> CompletionRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    prompt = _prompt(data.get("prompt"), config)
    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not _is_int(max_tokens) or max_tokens < 0:
        raise BadRequest(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
    temperature = data.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 100:
        raise BadRequest(f"temperature must be a number in [0, 100] (0 = greedy), got {temperature!r}")
    seed = data.get("seed")
    if seed is not None and not _is_int(seed):
        raise BadRequest(f"seed must be an integer, got {seed!r}")
    if len(prompt) + max_tokens > config.max_context:
        raise BadRequest(f"prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                         f"model's context of {config.max_context} tokens")
    return CompletionRequest(prompt, max_tokens, float(temperature), seed)


def _prompt(value: Any, config: ModelConfig) -> list[int]:
    if isinstance(value, str):
        ids = tokenizer.encode(value)
    elif isinstance(value, list) and all(_is_int(t) for t in value):
        bad = [t for t in value if not 0 <= t < config.vocab_size]
        if bad:
            raise BadRequest(f"token ids must be in [0, {config.vocab_size}); got {bad[:5]}")
        ids = list(value)
    elif value is None:
        raise BadRequest("prompt is required (text or a list of token ids)")
    else:
        raise BadRequest("prompt must be a string or a list of integer token ids (one prompt per request)")
    if not ids:
        raise BadRequest("prompt is empty")
    return ids


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def completion_body(result: Completion, model: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "text": tokenizer.decode(result.token_ids),
            "token_ids": result.token_ids,
            "finish_reason": "length",
            "logprobs": None,
        }],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": len(result.token_ids),
            "total_tokens": result.prompt_tokens + len(result.token_ids),
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
            "prompt_cache_hit_tokens": result.cached_tokens,
            "prompt_cache_miss_tokens": result.miss_tokens,
        },
        "timings": result.timings,
        "kv": {"bytes_read": result.kv_bytes_read, "bytes_written": result.kv_bytes_written},
    }
