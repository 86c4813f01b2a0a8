"""Deriving CalibratedConfig's statistics from a Mooncake conversation trace.

The trace has no session ids, so a request continues the earlier request with which it shares the
longest prefix of at least two hash ids (the first id, the shared system prompt, is in every request).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

from chainfs.loadtest.trace import parse_line


def _sigma(median: float, p90: float) -> float:
    return math.log(p90 / median) / 1.2816 if p90 > median > 0 else 0.0


def calibrate(path: str | Path) -> dict[str, float]:
    records = [parse_line(line, n) for n, line in enumerate(open(path), 1) if line.strip()]
    latest: dict[tuple[int, ...], int] = {}
    parent: list[int | None] = []
    for i, rec in enumerate(records):
        ids = rec["hash_ids"]
        found = None
        for k in range(len(ids), 1, -1):
            found = latest.get(tuple(ids[:k]))
            if found is not None:
                break
        parent.append(found)
        for k in range(1, len(ids) + 1):
            latest[tuple(ids[:k])] = i
    root = []
    for i, p in enumerate(parent):
        root.append(root[p] if p is not None else i)
    turns = list(Counter(root).values())
    firsts = sorted(records[i]["input_length"] for i in set(root))
    cont = [i for i, p in enumerate(parent) if p is not None]
    gaps = sorted((records[i]["timestamp"] - records[parent[i]]["timestamp"]) / 1000 for i in cont)
    growth = sorted(max(1, records[i]["input_length"] - records[parent[i]]["input_length"]) for i in cont)
    outs = sorted(max(1, r["output_length"]) for r in records)
    span_s = (records[-1]["timestamp"] - records[0]["timestamp"]) / 1000 or 1.0

    def q(xs: list, f: float) -> float:
        return float(xs[int(f * (len(xs) - 1))]) if xs else 0.0

    return {
        "requests": len(records),
        "sessions": len(turns),
        "session_rate_per_s": len(turns) / span_s,
        "mean_turns": statistics.mean(turns),
        "first_turn_median": q(firsts, 0.5),
        "first_turn_sigma": _sigma(q(firsts, 0.5), q(firsts, 0.9)),
        "growth_median": q(growth, 0.5),
        "growth_sigma": math.sqrt(2 * math.log(statistics.mean(growth) / q(growth, 0.5)))
        if growth and statistics.mean(growth) > q(growth, 0.5) else 0.0,
        "gap_median_s": q(gaps, 0.5),
        "gap_sigma": _sigma(q(gaps, 0.5), q(gaps, 0.9)),
        "output_median": q(outs, 0.5),
        "output_sigma": _sigma(q(outs, 0.5), q(outs, 0.9)),
    }
