"""Per-request rows and totals of a load test, mergeable across locust workers."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROW_FIELDS = [
    "index", "session", "turn", "worker", "engine", "sent_s", "ok", "error", "prompt_tokens", "completion_tokens",
    "hit_tokens", "miss_tokens", "ttft_ms", "client_ttft_ms", "latency_ms", "kv_lookup_ms", "kv_load_ms",
    "prefill_compute_ms", "kv_store_ms", "queue_ms", "kv_store_wait_ms", "kv_bytes_read", "kv_bytes_written",
]


def row_from_response(req_index: int, session: int, turn: int, engine: str, sent_s: float,
                      latency_ms: float, body: dict[str, Any]) -> dict[str, Any]:
    """One CSV row from an engine's completion response (OpenAI/DeepSeek-shaped usage)."""
    usage = body.get("usage") or {}
    timings = body.get("timings") or usage.get("timings") or {}
    details = usage.get("prompt_tokens_details") or {}
    prompt = int(usage.get("prompt_tokens", 0))
    hit = int(usage.get("prompt_cache_hit_tokens", details.get("cached_tokens", 0)))
    return {
        "index": req_index, "session": session, "turn": turn, "engine": engine, "sent_s": round(sent_s, 4),
        "ok": True, "error": "", "prompt_tokens": prompt,
        "completion_tokens": int(usage.get("completion_tokens", 0)),
        "hit_tokens": hit, "miss_tokens": int(usage.get("prompt_cache_miss_tokens", prompt - hit)),
        "ttft_ms": float(timings.get("ttft_ms", latency_ms)), "latency_ms": round(latency_ms, 3),
        "kv_lookup_ms": float(timings.get("kv_lookup_ms", 0.0)), "kv_load_ms": float(timings.get("kv_load_ms", 0.0)),
        "prefill_compute_ms": float(timings.get("prefill_compute_ms", 0.0)),
        "kv_store_ms": float(timings.get("kv_store_ms", 0.0)), "queue_ms": float(timings.get("queue_ms", 0.0)),
        "kv_store_wait_ms": float(timings.get("kv_store_wait_ms", 0.0)),
        "kv_bytes_read": int((body.get("kv") or {}).get("bytes_read", 0)),
        "kv_bytes_written": int((body.get("kv") or {}).get("bytes_written", 0)),
    }


def error_row(req_index: int, session: int, turn: int, engine: str, sent_s: float, latency_ms: float,
              prompt_tokens: int, error: str) -> dict[str, Any]:
    row = {f: 0 for f in ROW_FIELDS}
    row.update(index=req_index, session=session, turn=turn, engine=engine, sent_s=round(sent_s, 4), ok=False,
               error=error[:200], prompt_tokens=prompt_tokens, miss_tokens=prompt_tokens,
               latency_ms=round(latency_ms, 3))
    return row


@dataclass
class Tally:
    """What one process has seen; workers ship `drain()` to the master, which `merge`s it."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def drain(self) -> dict[str, Any]:
        out, self.rows = {"rows": self.rows}, []
        return out

    def merge(self, data: dict[str, Any] | None) -> None:
        if data:
            self.rows.extend(data.get("rows", []))

    @property
    def completed(self) -> int:
        return len(self.rows)

    def totals(self) -> dict[str, float]:
        ok = [r for r in self.rows if r["ok"]]
        prompt = sum(r["prompt_tokens"] for r in self.rows)
        hit = sum(r["hit_tokens"] for r in ok)
        return {"requests": len(self.rows), "errors": len(self.rows) - len(ok), "prompt_tokens": prompt,
                "hit_tokens": hit, "miss_tokens": prompt - hit,
                "token_hit_rate": hit / prompt if prompt else 0.0}


def write_csv(rows: list[dict[str, Any]], path: str | Path, leading: tuple[str, ...] = ()) -> None:
    """Rows in request order; `leading` names extra columns (e.g. the scenario) put first."""
    columns = [*leading, *ROW_FIELDS]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (*(str(r.get(k, "")) for k in leading), r["index"])):
            writer.writerow({k: row.get(k, "") for k in columns})


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = dict(raw)
            for k in ROW_FIELDS:
                if k in ("engine", "error"):
                    continue
                if k == "ok":
                    row[k] = raw[k] == "True"
                elif k in ("sent_s",) or k.endswith("_ms"):
                    row[k] = float(raw[k] or 0)
                else:
                    row[k] = int(float(raw[k] or 0))
            rows.append(row)
    return rows
