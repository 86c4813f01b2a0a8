"""Reply bodies and stream chunks in OpenAI's shapes (completions and chat), and its error shape.

Usage carries OpenAI's `prompt_tokens_details.cached_tokens` and DeepSeek's
`prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`. A prompt asked for with n > 1 counts once
(as OpenAI bills it): its prompt and cached tokens are those of its first choice. Two extra
top-level fields, `timings` (milliseconds, summed over the request's engine calls) and `kv`
(bytes read and written to the KV store), sit beside usage; OpenAI clients ignore them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from chainfs.engine.api import GenerationRequest
from chainfs.engine.generate import ChoiceResult, Delta, TokenLogprob


def new_id(req: GenerationRequest) -> str:
    return f"{'chatcmpl' if req.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def token_str(token_id: int) -> str:
    """A byte token as text: the character for ASCII, `bytes:\\xNN` otherwise (vLLM's convention)."""
    return chr(token_id) if token_id < 128 else f"bytes:\\x{token_id:02x}"


def usage(req: GenerationRequest, results: list[ChoiceResult]) -> dict[str, Any]:
    first = [r for r in results if r.index % req.n == 0]
    prompt = sum(r.completion.prompt_tokens for r in first)
    cached = sum(r.completion.cached_tokens for r in first)
    completion = sum(len(r.completion.token_ids) for r in results)
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "prompt_cache_hit_tokens": cached, "prompt_cache_miss_tokens": prompt - cached,
    }


def extras(results: list[ChoiceResult]) -> dict[str, Any]:
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.completion.timings.items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    return {"timings": timings,
            "kv": {"bytes_read": sum(r.completion.kv_bytes_read for r in results),
                   "bytes_written": sum(r.completion.kv_bytes_written for r in results)}}


def body(req: GenerationRequest, results: list[ChoiceResult], rid: str, created: int) -> dict[str, Any]:
    if req.kind == "chat":
        choices = [{"index": r.index, "message": {"role": "assistant", "content": r.text},
                    "logprobs": _chat_logprobs(r.logprobs) if req.logprobs is not None else None,
                    "finish_reason": r.finish_reason} for r in results]
        obj = "chat.completion"
    else:
        choices = []
        for r in results:
            echo = bytes(req.prompts[r.prompt_index]).decode("utf-8", errors="replace") if req.echo else ""
            choices.append({"index": r.index, "text": echo + r.text, "token_ids": r.token_ids,
                            "logprobs": _completion_logprobs(r.logprobs) if req.logprobs is not None else None,
                            "finish_reason": r.finish_reason})
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": choices,
            "usage": usage(req, results), **extras(results)}


def chunk(req: GenerationRequest, delta: Delta, rid: str, created: int, first: bool) -> dict[str, Any]:
    """One stream event of one choice; `first` marks a chat choice's opening (role) chunk."""
    if req.kind == "chat":
        d: dict[str, Any] = {}
        if first:
            d["role"] = "assistant"
        if delta.finish_reason is None:
            d["content"] = delta.text
        choice = {"index": delta.index, "delta": d,
                  "logprobs": _chat_logprobs(delta.logprobs) if req.logprobs is not None and delta.logprobs else None,
                  "finish_reason": delta.finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": delta.index, "text": delta.text,
                  "logprobs": _completion_logprobs(delta.logprobs) if req.logprobs is not None and delta.logprobs
                  else None, "finish_reason": delta.finish_reason}
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [choice]}
    if req.include_usage:
        out["usage"] = None
    return out


def usage_chunk(req: GenerationRequest, results: list[ChoiceResult], rid: str, created: int) -> dict[str, Any]:
    """The last event before [DONE] when stream_options.include_usage: no choices, the usage."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [],
            "usage": usage(req, results), **extras(results)}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: JSON` and a blank line (`data: [DONE]` ends the stream)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def error(message: str, kind: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def models(model: str, max_context: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, max_context)]}


def model_card(model: str, max_context: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _STARTED, "owned_by": "chainfs",
            "root": model, "parent": None, "max_model_len": max_context}


def _completion_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    return {"tokens": [token_str(lp.token_id) for lp in lps],
            "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{token_str(t): v for t, v in lp.top} for lp in lps],
            "text_offset": list(range(len(lps)))}  # one byte per token


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [{"token": token_str(lp.token_id), "logprob": lp.logprob, "bytes": [lp.token_id],
                         "top_logprobs": [{"token": token_str(t), "logprob": v, "bytes": [t]} for t, v in lp.top]}
                        for lp in lps]}


_STARTED = int(time.time())
