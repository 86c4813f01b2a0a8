"""Replaying a Mooncake-format trace (JSONL of timestamp, input_length, output_length, hash_ids).

Each hash id names a 512-token block; `length_scale` K divides every length by K, so one hash id
becomes 512/K tokens (a length scale dividing 512 by a multiple of the KV block size keeps cache
blocks aligned with trace blocks). Every request is its own session: the trace has no session ids,
and its prefix sharing is carried by the hash ids themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from chainfs.loadtest.workload import TRACE_BLOCK_TOKENS, Request, segment_tokens


def parse_line(line: str, lineno: int) -> dict:
    try:
        rec = json.loads(line)
        ts, n_in, n_out, ids = rec["timestamp"], rec["input_length"], rec["output_length"], rec["hash_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"trace line {lineno}: not a Mooncake record ({exc})") from None
    if not (isinstance(n_in, int) and n_in > 0 and isinstance(n_out, int) and n_out >= 0
            and isinstance(ids, list) and all(isinstance(h, int) and h >= 0 for h in ids)
            and isinstance(ts, (int, float)) and ts >= 0):
        raise ValueError(f"trace line {lineno}: bad field values")
    if len(ids) * TRACE_BLOCK_TOKENS < n_in:
        raise ValueError(f"trace line {lineno}: {len(ids)} hash ids cannot cover {n_in} input tokens")
    return rec


def load_trace(path: str | Path, vocab_size: int, length_scale: int = 1, time_scale: float = 1.0,
               max_requests: int | None = None, max_prompt_tokens: int | None = None,
               max_output_tokens: int | None = None) -> list[Request]:
    """Requests of a trace, in trace order; prompts over `max_prompt_tokens` are cut to it.

    Arrival times are the trace's timestamps times `time_scale` (0 sends as fast as possible).
    """
    if length_scale < 1 or TRACE_BLOCK_TOKENS % length_scale:
        raise ValueError(f"length_scale must divide {TRACE_BLOCK_TOKENS}, got {length_scale}")
    if time_scale < 0:
        raise ValueError(f"time_scale must be >= 0, got {time_scale}")
    per_block = TRACE_BLOCK_TOKENS // length_scale
    cache: dict[int, list[int]] = {}
    requests: list[Request] = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if max_requests is not None and len(requests) >= max_requests:
                break
            if not line.strip():
                continue
            rec = parse_line(line, lineno)
            n_in = max(1, rec["input_length"] // length_scale)
            if max_prompt_tokens is not None:
                n_in = min(n_in, max_prompt_tokens)
            prompt: list[int] = []
            for h in rec["hash_ids"]:
                if len(prompt) >= n_in:
                    break
                block = cache.get(h)
                if block is None:
                    block = cache[h] = segment_tokens(h, per_block, vocab_size, salt=0x7ACE)
                prompt.extend(block)
            n_out = max(1, rec["output_length"] // length_scale)
            if max_output_tokens is not None:
                n_out = min(n_out, max_output_tokens)
            index = len(requests)
            requests.append(Request(index=index, session=index, turn=0,
                                    arrival_s=rec["timestamp"] / 1000.0 * time_scale,
                                    prompt=prompt[:n_in], max_tokens=n_out))
    return requests
