"""A linearizability checker for register histories (Wing & Gong search, with memoization).

A history is a list of `Op`s on one key: (call time, return time, kind, value). `kind` is "w"
(write of `value`) or "r" (read that returned `value`). An op whose outcome is unknown (it timed out
or failed after it may have reached the servers) has `ret = None`: it may have taken effect at any
time after its call, or never. Failed reads carry no information and are simply not recorded.

The search (Wing & Gong 1993, with the memoization of Lowe 2017 / porcupine): repeatedly pick a
"minimal" op (one called before every pending op returned), apply it to the register model, and
recurse; backtrack when a read does not match. States already visited as (set of linearized ops,
register value) are not explored again, which makes the search fast on real histories. The history
is linearizable when every op with a known return is linearized; unknown ops may be left out.

Values are compared as given (use digests for big values). `initial` is the register's value before
any write (e.g. the content a chunk had before the recorded run).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable


@dataclass(frozen=True)
class Op:
    call: float
    ret: float | None  # None: outcome unknown (maybe applied)
    kind: str          # "w" or "r"
    value: Hashable
    client: int = 0

    @property
    def end(self) -> float:
        return math.inf if self.ret is None else self.ret


@dataclass
class Result:
    ok: bool
    key: Hashable = None
    explored: int = 0
    message: str = ""


def check_register(ops: Iterable[Op], initial: Hashable = None, max_states: int = 2_000_000) -> Result:
    """True when the single-register history `ops` is linearizable (see the module docstring)."""
    history = sorted(ops, key=lambda o: o.call)
    for op in history:
        if op.kind not in ("w", "r"):
            raise ValueError(f"unknown op kind {op.kind!r}")
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"op returns before it is called: {op}")
    n = len(history)
    required = 0
    for i, op in enumerate(history):
        if op.ret is not None:
            required |= 1 << i
    seen: set[tuple[int, Hashable]] = set()
    explored = 0
    # Iterative DFS: each frame is (done mask, register value, candidate list, next candidate index).
    stack: list[tuple[int, Hashable, list[int], int]] = []

    def candidates(done: int) -> list[int]:
        """Ops not yet linearized that were called before every pending op returned."""
        horizon = math.inf
        for i in range(n):
            if not done >> i & 1:
                horizon = min(horizon, history[i].end)
                if history[i].call > horizon:
                    break
        return [i for i in range(n) if not done >> i & 1 and history[i].call <= horizon]

    stack.append((0, initial, candidates(0), 0))
    while stack:
        done, value, cands, at = stack.pop()
        if done & required == required:
            return Result(True, explored=explored)
        while at < len(cands):
            i = cands[at]
            at += 1
            op = history[i]
            if op.kind == "r" and op.value != value:
                continue
            new_value = op.value if op.kind == "w" else value
            new_done = done | 1 << i
            state = (new_done, new_value)
            if state in seen:
                continue
            seen.add(state)
            explored += 1
            if explored > max_states:
                return Result(False, explored=explored, message="search gave up (state limit)")
            stack.append((done, value, cands, at))  # resume here after the child
            stack.append((new_done, new_value, candidates(new_done), 0))
            break
    return Result(False, explored=explored, message=_explain(history, required, initial))


def _explain(history: list[Op], required: int, initial: Hashable) -> str:
    reads = [op for op in history if op.kind == "r"]
    written = {op.value for op in history if op.kind == "w"} | {initial}
    for op in reads:
        if op.value not in written:
            return f"read at {op.call:.3f} returned a value never written: {op.value!r}"
    return f"no linearization of {len(history)} ops ({bin(required).count('1')} completed)"


def check_history(ops_by_key: dict[Hashable, list[Op]], initial: dict[Hashable, Hashable] | None = None) -> Result:
    """Checks every key on its own (registers are independent); the first failure is returned."""
    explored = 0
    for key, ops in ops_by_key.items():
        result = check_register(ops, (initial or {}).get(key))
        explored += result.explored
        if not result.ok:
            result.key = key
            return result
    return Result(True, explored=explored)


@dataclass
class Recorder:
    """Thread-safe recording of ops during a test; `invoke` returns a token, `complete` ends it."""

    clock: Any = time.monotonic
    ops: dict[Hashable, list[Op]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: Hashable, kind: str, value: Hashable, call: float, ret: float | None,
               client: int = 0) -> None:
        with self._lock:
            self.ops[key].append(Op(call, ret, kind, value, client))

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.ops.values())

