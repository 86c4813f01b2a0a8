"""Synthetic workloads: multi-round QA, and a generator calibrated to the conversation trace.

Both build sessions whose turns extend the previous prompt with the previous answer and a new
question, after one system prompt shared by every session: the shape that makes prefix caching pay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from chainfs.loadtest.workload import Request, segment_tokens

SYSTEM_SEGMENT = 0


@dataclass(frozen=True)
class QAConfig:
    """Multi-round QA: `users` sessions of `rounds` turns each."""

    users: int = 8
    rounds: int = 4
    system_prompt_tokens: int = 256
    history_tokens: int = 128      # per-user context before the first question
    question_tokens: int = 48
    answer_tokens: int = 48        # appended to the history after each turn
    max_tokens: int = 4            # tokens the engine generates per request
    request_rate: float = 2.0      # new sessions per second (0: all start at once)
    turn_gap_s: float = 1.0        # pause between a session's turns


def multi_round_qa(cfg: QAConfig, vocab_size: int, seed: int = 1) -> list[Request]:
    system = segment_tokens(SYSTEM_SEGMENT, cfg.system_prompt_tokens, vocab_size, salt=seed)
    requests: list[Request] = []
    for user in range(cfg.users):
        start = user / cfg.request_rate if cfg.request_rate > 0 else 0.0
        context = system + segment_tokens(1_000_000 + user, cfg.history_tokens, vocab_size, salt=seed)
        for turn in range(cfg.rounds):
            seg = 2_000_000 + user * 10_000 + turn
            prompt = context + segment_tokens(seg, cfg.question_tokens, vocab_size, salt=seed)
            requests.append(Request(index=0, session=user, turn=turn, arrival_s=start + turn * cfg.turn_gap_s,
                                    prompt=prompt, max_tokens=cfg.max_tokens))
            context = prompt + segment_tokens(seg + 5_000, cfg.answer_tokens, vocab_size, salt=seed)
    return _index_by_arrival(requests)


@dataclass(frozen=True)
class CalibratedConfig:
    """Session statistics of mooncake_conversation.jsonl (see `calibrate` for how they are derived).

    Lengths are in trace tokens and divided by the run's length scale; times are in trace seconds
    and multiplied by its time scale.
    """

    sessions: int = 40
    session_rate_per_s: float = 2.09     # new sessions per second in the trace (7373 in 3537 s)
    mean_turns: float = 1.63             # turns per session; geometric
    system_prompt_tokens: int = 512      # one block shared by every request of the trace
    first_turn_median: float = 5264.0    # first-turn input tokens: lognormal
    first_turn_sigma: float = 1.23
    growth_median: float = 454.0         # input growth per later turn: lognormal
    growth_sigma: float = 1.59
    gap_median_s: float = 123.0          # time between a session's turns: lognormal
    gap_sigma: float = 1.07
    output_median: float = 350.0         # output tokens (capped by max_tokens)
    output_sigma: float = 0.42


def calibrated(cfg: CalibratedConfig, vocab_size: int, length_scale: int = 8, time_scale: float = 0.01,
               max_prompt_tokens: int = 4096, max_tokens: int = 4, seed: int = 1) -> list[Request]:
    rng = np.random.default_rng(seed)
    system = segment_tokens(SYSTEM_SEGMENT, cfg.system_prompt_tokens // length_scale, vocab_size, salt=seed)
    requests: list[Request] = []
    start = 0.0
    p_more = 1.0 - 1.0 / cfg.mean_turns
    for s in range(cfg.sessions):
        start += rng.exponential(1.0 / cfg.session_rate_per_s)
        turns = 1
        while rng.random() < p_more:
            turns += 1
        first = _lognormal(rng, cfg.first_turn_median, cfg.first_turn_sigma) / length_scale
        context = system + segment_tokens(10_000_000 + s, max(1, int(first) - len(system)), vocab_size, salt=seed)
        at = start
        for turn in range(turns):
            if turn:
                at += _lognormal(rng, cfg.gap_median_s, cfg.gap_sigma)
                grow = max(1, int(_lognormal(rng, cfg.growth_median, cfg.growth_sigma) / length_scale))
                context = context + segment_tokens(20_000_000 + s * 100 + turn, grow, vocab_size, salt=seed)
            prompt = context[:max_prompt_tokens]
            out = max(1, min(max_tokens, int(_lognormal(rng, cfg.output_median, cfg.output_sigma) / length_scale)))
            requests.append(Request(index=0, session=s, turn=turn, arrival_s=at,
                                    prompt=list(prompt), max_tokens=out))
    # Order (and so round-robin engine choice) follows the trace-like clock, whatever the time scale.
    _index_by_arrival(requests)
    for r in requests:
        r.arrival_s *= time_scale
    return requests


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * math.exp(sigma * rng.standard_normal()))


def _index_by_arrival(requests: list[Request]) -> list[Request]:
    requests.sort(key=lambda r: (r.arrival_s, r.session, r.turn))
    for i, r in enumerate(requests):
        r.index = i
    return requests
