"""Request parsing and validation for /v1/completions and /v1/chat/completions (OpenAI's shapes).

Kept apart from HTTP so the rules can be tested and reused without a server. Both endpoints parse
into one `GenerationRequest`; `openai_format` builds the replies and `generate` runs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chainfs.engine import chat, tokenizer
from chainfs.engine.presets import ModelConfig

DEFAULT_MAX_TOKENS = 16
MAX_N = 16
MAX_PROMPTS = 64
MAX_STOP = 4
MAX_LOGPROBS = 20
MAX_DEPTH = 32           # nesting of a body's JSON: OpenAI's deepest field (messages' content parts) is 4
MAX_SEED = 2**63 - 1     # numpy's generators take non-negative seeds; choice j uses seed + j
MAX_SALT = 256           # characters of a cache_salt


class BadRequest(ValueError):
    """The client's fault: answered with HTTP 400 in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFound(LookupError):
    """The request names a model this engine does not serve (HTTP 404)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.")
        self.model = model


@dataclass(frozen=True)
class GenerationRequest:
    kind: str                      # "completion" or "chat"
    model: str
    prompts: list[list[int]]       # one or more (completions take a list of prompts)
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    n: int
    stop: tuple[str, ...]
    logprobs: int | None           # None: no logprobs; k: the sampled token's and the top k
    echo: bool
    stream: bool
    include_usage: bool
    cache_salt: str | None = None  # vLLM's field: seeds the first block's hash (tenant isolation)
    tenant: str = "default"        # the caller's metrics label (engine/tenants.py), never a key


def parse_completion(body: bytes, config: ModelConfig, served: str | None = None) -> GenerationRequest:
    data = _object(body)
    prompts = _prompts(data.get("prompt"), config)
    logprobs = data.get("logprobs")
    if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= 5):
        raise BadRequest(f"logprobs must be an integer in [0, 5], got {logprobs!r}", "logprobs")
    echo = _bool(data, "echo")
    if echo and logprobs is not None:
        raise BadRequest("echo with logprobs (prompt logprobs) is not supported", "echo")
    return _common(data, "completion", prompts, logprobs, echo, config, served, ("max_tokens",), ())


def parse_chat(body: bytes, config: ModelConfig, served: str | None = None) -> GenerationRequest:
    data = _object(body)
    try:
        prompt = tokenizer.encode(chat.render(data.get("messages")))
    except chat.TemplateError as exc:
        raise BadRequest(str(exc), "messages") from None
    logprobs: int | None = None
    if _bool(data, "logprobs"):
        top = data.get("top_logprobs", 0)
        if not _is_int(top) or not 0 <= top <= MAX_LOGPROBS:
            raise BadRequest(f"top_logprobs must be an integer in [0, {MAX_LOGPROBS}], got {top!r}", "top_logprobs")
        logprobs = top
    elif data.get("top_logprobs") is not None:
        raise BadRequest("top_logprobs needs logprobs: true", "top_logprobs")
    _check_vocab(prompt, config)
    return _common(data, "chat", [prompt], logprobs, False, config, served,
                   ("max_completion_tokens", "max_tokens"), (chat.TURN_STOP,))


def _common(data: dict[str, Any], kind: str, prompts: list[list[int]], logprobs: int | None, echo: bool,
            config: ModelConfig, served: str | None, max_keys: tuple[str, ...],
            extra_stop: tuple[str, ...]) -> GenerationRequest:
    model = data.get("model")
    names = {config.name, served or config.name}
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string", "model")
    if model is not None and model not in names:
        raise ModelNotFound(model)
    max_tokens = next((data[k] for k in max_keys if data.get(k) is not None), DEFAULT_MAX_TOKENS)
    if not _is_int(max_tokens) or max_tokens < 0:
        raise BadRequest(f"{max_keys[0]} must be a non-negative integer, got {max_tokens!r}", max_keys[0])
    temperature = _number(data, "temperature", 0.0, 0, 2)  # default greedy: reproducible
    top_p = _number(data, "top_p", 1.0, 0, 1)
    if top_p <= 0:
        raise BadRequest("top_p must be in (0, 1]", "top_p")
    seed = data.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= MAX_SEED - MAX_N):
        raise BadRequest(f"seed must be an integer in [0, 2**63 - {MAX_N}], got {seed!r}", "seed")
    n = data.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise BadRequest(f"n must be an integer in [1, {MAX_N}], got {n!r}", "n")
    stop = _stop(data.get("stop"))
    stream = _bool(data, "stream")
    options = data.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise BadRequest("stream_options must be an object, and only with stream: true", "stream_options")
    include_usage = _bool(options or {}, "include_usage")
    salt = data.get("cache_salt")
    if salt is not None and (not isinstance(salt, str) or not 0 < len(salt) <= MAX_SALT or "\0" in salt):
        raise BadRequest(f"cache_salt must be a non-empty string of at most {MAX_SALT} characters, "
                         "without NUL", "cache_salt")
    for p in prompts:
        if len(p) + max_tokens > config.max_context:
            raise BadRequest(f"prompt ({len(p)} tokens) plus max_tokens ({max_tokens}) exceeds the "
                             f"model's context of {config.max_context} tokens", max_keys[0])
    return GenerationRequest(kind, served or config.name, prompts, max_tokens, float(temperature), float(top_p),
                             seed, n, stop + extra_stop, logprobs, echo, stream, include_usage, salt)


def _object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. The C decoder guards its own recursion (RecursionError, deep past
    any sane body) and refuses integers of over 4300 digits (ValueError): both are the client's
    fault, as is any nesting deeper than MAX_DEPTH, checked after parsing without recursion."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (an object or array is one level), with an explicit stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:  # past the limit the answer is known: stop walking
                stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _prompts(value: Any, config: ModelConfig) -> list[list[int]]:
    """A string, a list of token ids, a list of strings or a list of token-id lists."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(_is_int(t) for t in value)):
        batch = [value]
    elif isinstance(value, list) and value and all(isinstance(p, (str, list)) for p in value):
        batch = value
    elif value is None:
        raise BadRequest("prompt is required (text, token ids, or a list of either)", "prompt")
    else:
        raise BadRequest("prompt must be a string, a list of token ids, or a list of those", "prompt")
    if len(batch) > MAX_PROMPTS:
        raise BadRequest(f"at most {MAX_PROMPTS} prompts per request, got {len(batch)}", "prompt")
    out = []
    for p in batch:
        if isinstance(p, str):
            ids = tokenizer.encode(p)
        elif all(_is_int(t) for t in p):
            ids = list(p)
            _check_vocab(ids, config)
        else:
            raise BadRequest("a token-id prompt must hold only integers", "prompt")
        if not ids:
            raise BadRequest("prompt is empty", "prompt")
        out.append(ids)
    return out


def _check_vocab(ids: list[int], config: ModelConfig) -> None:
    bad = [t for t in ids if not 0 <= t < config.vocab_size]
    if bad:
        raise BadRequest(f"token ids must be in [0, {config.vocab_size}); got {bad[:5]}", "prompt")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) or len(items) > MAX_STOP:
        raise BadRequest(f"stop must be a non-empty string or a list of at most {MAX_STOP} of them", "stop")
    return tuple(items)


def _number(data: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"{key} must be a number in [{lo}, {hi}], got {value!r}", key)
    return float(value)


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, got {value!r}", key)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
