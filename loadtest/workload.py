"""A workload: sessions of requests with arrival times and token ids, saved as JSONL.

Every generator (trace replay, multi-round QA, the calibrated generator) produces this one shape, so
the locust user, the offline ideal replay and the report never care where requests came from.
A session's requests run in order, each at the earliest at its arrival time; sessions run in
parallel up to the load test's concurrency.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from chainfs.engine import chat

TRACE_BLOCK_TOKENS = 512  # Mooncake hash ids name 512-token blocks

# Load tests talk to the engines through the chat API, as users' clients do. A request's prompt is
# the engine-side token ids of one user message: content ids below CHAT_VOCAB (ASCII, so text and
# bytes map 1:1) followed by the user marker of the chat template (engine/chat.py). The offline
# ideal replay hashes these same ids, so it predicts exactly what the engines see.
CHAT_VOCAB = 128
USER_MARKER = list(chat.marker("user").encode())


@dataclass
class Request:
    index: int          # position in the whole workload (trace order)
    session: int
    turn: int
    arrival_s: float    # seconds after the start of the run
    prompt: list[int]   # token ids
    max_tokens: int

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)


@dataclass
class Session:
    session: int
    requests: list[Request] = field(default_factory=list)


def segment_tokens(segment_id: int, n: int, vocab_size: int, salt: int = 0) -> list[int]:
    """Deterministic token ids for one named segment (a trace hash id, a system prompt, a turn)."""
    rng = np.random.default_rng([salt, segment_id])
    return rng.integers(0, vocab_size, size=n, dtype=np.int64).tolist()


def as_user_message(content: list[int]) -> list[int]:
    """The prompt ids of one user message whose content is `content` (ids below CHAT_VOCAB)."""
    return [*content, *USER_MARKER]


def chat_messages(prompt: list[int]) -> list[dict[str, str]]:
    """The chat messages a request's prompt ids come from (the inverse of `as_user_message`)."""
    n = len(USER_MARKER)
    if len(prompt) < n or prompt[-n:] != USER_MARKER or any(t >= CHAT_VOCAB for t in prompt[:-n]):
        raise ValueError("a load-test prompt is ASCII content followed by the chat template's user marker")
    return [{"role": "user", "content": "".join(map(chr, prompt[:-n]))}]


def group_sessions(requests: Iterable[Request]) -> list[Session]:
    sessions: dict[int, Session] = {}
    for r in sorted(requests, key=lambda r: r.index):
        sessions.setdefault(r.session, Session(r.session)).requests.append(r)
    return sorted(sessions.values(), key=lambda s: s.requests[0].index)


def save(requests: Iterable[Request], path: str | Path) -> int:
    count = 0
    with open(path, "w") as f:
        for r in requests:
            f.write(json.dumps(asdict(r), separators=(",", ":")) + "\n")
            count += 1
    return count


def load(path: str | Path) -> list[Request]:
    return list(iter_load(path))


def iter_load(path: str | Path) -> Iterator[Request]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield Request(**json.loads(line))
