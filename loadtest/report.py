"""What a comparison measured: per-scenario figures, the console table, JSON, CSV and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from chainfs.engine.presets import ModelConfig
from chainfs.loadtest.ideal import capacity_curve, replay, request_keys
from chainfs.loadtest.plots import plot_all
from chainfs.loadtest.stats import Tally, write_csv
from chainfs.loadtest.vllm_engines import tiers
from chainfs.loadtest.workload import Request

# DeepSeek's published prices per million input tokens, on a cache hit and on a miss.
PRICE_HIT_PER_M = 0.14
PRICE_MISS_PER_M = 0.55


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def hit_rate_over_time(rows: list[dict], buckets: int = 20) -> list[tuple[float, float, float]]:
    """(end of window in s, hit rate of the window, cumulative hit rate up to its end).

    The windowed rate shows phases (a cold start, a warmed cache); the cumulative one converges
    to the overall figure and stays readable when windows hold few requests.
    """
    ok = sorted((r for r in rows if r["ok"]), key=lambda r: r["sent_s"])
    if not ok:
        return []
    end = ok[-1]["sent_s"] or 1.0
    width = end / buckets
    series = []
    total_prompt = total_hit = 0
    for b in range(buckets):
        lo, hi = b * width, (b + 1) * width
        window = [r for r in ok if lo <= r["sent_s"] < hi or (b == buckets - 1 and r["sent_s"] == end)]
        prompt = sum(r["prompt_tokens"] for r in window)
        hit = sum(r["hit_tokens"] for r in window)
        total_prompt, total_hit = total_prompt + prompt, total_hit + hit
        if prompt:
            series.append((hi, hit / prompt, total_hit / total_prompt))
    return series


def kv_time_per_request(ok: list[dict], engines: list[dict] | None) -> dict[str, float | None]:
    """Mean milliseconds per request of each KV step beside prefill compute.

    `store` is the write-behind thread's time (from the engines' counters at the end of the run),
    which neither TTFT nor the compute lock waits for; `store_handoff` is what the request spent
    queueing its blocks, `store_wait` how long its answer then waited for them (after its last
    token); `queue` is waiting for the compute lock."""
    n = len(ok) or 1
    mean = lambda key: sum(float(r.get(key) or 0.0) for r in ok) / n  # noqa: E731
    writers = [e.get("write_behind") for e in engines or () if e.get("write_behind")]
    out = {"lookup": mean("kv_lookup_ms"), "load": mean("kv_load_ms"),
           "store": sum(w["store_ms"] for w in writers) / n if writers else None,
           "store_handoff": mean("kv_store_ms"), "store_wait": mean("kv_store_wait_ms"), "queue": mean("queue_ms"),
           "prefill_compute": mean("prefill_compute_ms")}
    sched = [e for e in engines or () if "scheduler" in e]
    if sched:  # vLLM: per-request times are the connectors' counters (its stream does not carry them)
        total = lambda side, key: 1000 * sum(float(e.get(side, {}).get(key, 0.0)) for e in sched) / n  # noqa: E731
        out.update(lookup=total("scheduler", "lookup_s"), load=total("connector", "load_s"),
                   store_wait=total("scheduler", "save_wait_s"))
    return out


def scenario_figures(rows: list[dict], ideal_rate: float, model: ModelConfig,
                     engines: list[dict] | None = None) -> dict[str, Any]:
    totals = Tally(rows=rows).totals()  # requests, errors, prompt/hit/miss tokens, hit rate
    ok = [r for r in rows if r["ok"]]
    prompt, hit = totals["prompt_tokens"], totals["hit_tokens"]
    ttft = [r["ttft_ms"] for r in ok]
    computed = sum(r["prompt_tokens"] - r["hit_tokens"] for r in ok)
    compute_s = sum(r["prefill_compute_ms"] for r in ok) / 1000
    load_s = sum(r["kv_load_ms"] for r in ok) / 1000
    bytes_read = sum(r["kv_bytes_read"] for r in ok)
    bytes_written = sum(r["kv_bytes_written"] for r in ok)
    split = tiers(engines, hit)
    if split and not bytes_read and not bytes_written:  # vLLM: the connectors' counters
        bytes_read, bytes_written = split["kv_bytes_read"], split["kv_bytes_written"]
    cost = ((hit * PRICE_HIT_PER_M + (prompt - hit) * PRICE_MISS_PER_M) / prompt) if prompt else 0.0
    per_token_s = compute_s / computed if computed else 0.0
    return {
        **totals,
        "ideal_token_hit_rate": ideal_rate,
        "hit_rate_over_time": hit_rate_over_time(rows),
        "ttft_ms": {"p50": percentile(ttft, 50), "p90": percentile(ttft, 90), "p99": percentile(ttft, 99),
                    "mean": float(np.mean(ttft)) if ttft else 0.0},
        "prefill_tokens_computed": computed, "prefill_compute_s": compute_s,
        "prefill_compute_ms_per_token": per_token_s * 1000,
        "kv_bytes_read": bytes_read, "kv_bytes_written": bytes_written, "kv_load_s": load_s,
        "kv_read_bandwidth_mb_s": bytes_read / load_s / 1e6 if load_s else 0.0,
        "break_even_bandwidth_mb_s": model.kv_bytes_per_token / per_token_s / 1e6 if per_token_s else 0.0,
        "cost_per_million_input_usd": cost,
        "kv_ms_per_request": kv_time_per_request(ok, engines),
        "write_behind": _sum_writers(engines),
        "hit_tiers": split,
    }


def _sum_writers(engines: list[dict] | None) -> dict[str, float] | None:
    writers = [e["write_behind"] for e in engines or () if e.get("write_behind")]
    if not writers:
        return None
    return {k: sum(w[k] for w in writers) if not k.startswith("max_") else max(w[k] for w in writers)
            for k in writers[0]}


def build_report(results: dict[str, list[dict]], requests: list[Request], model: ModelConfig,
                 block_tokens: int, config: dict[str, Any],
                 engine_stats: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    keys = request_keys(requests, block_tokens)  # hashed once for the ideal and the capacity curve
    ideal = replay(requests, block_tokens, keys=keys).token_hit_rate
    scenarios = {name: scenario_figures(rows, ideal, model, (engine_stats or {}).get(name))
                 for name, rows in results.items()}
    if "none" in scenarios:
        base = scenarios["none"]["cost_per_million_input_usd"]
        base_ttft = scenarios["none"]["ttft_ms"]["p50"]
        for s in scenarios.values():
            s["cost_saving_vs_none"] = 1 - s["cost_per_million_input_usd"] / base if base else 0.0
            s["ttft_p50_vs_none"] = s["ttft_ms"]["p50"] / base_ttft if base_ttft else 0.0
    return {
        "config": config,
        "model": {"name": model.name, "kv_bytes_per_token": model.kv_bytes_per_token,
                  "flops_per_token": model.flops_per_token(0)},
        "prices_usd_per_million": {"hit": PRICE_HIT_PER_M, "miss": PRICE_MISS_PER_M},
        "ideal_token_hit_rate": ideal,
        "capacity_curve": [{"blocks": b, "bytes": b * block_tokens * model.kv_bytes_per_token, "token_hit_rate": r}
                           for b, r in capacity_curve(requests, block_tokens, keys=keys)],
        "scenarios": scenarios,
    }


ROWS: list[tuple[str, Any]] = [
    ("requests (errors)", lambda s: f"{s['requests']} ({s['errors']})"),
    ("prompt tokens", lambda s: f"{s['prompt_tokens']:,}"),
    ("hit tokens", lambda s: f"{s['hit_tokens']:,}"),
    ("token hit rate", lambda s: f"{s['token_hit_rate']:.1%}"),
    ("hits: vLLM memory / store", lambda s: f"{s['hit_tiers']['vllm_memory_tokens']:,} / "
                                            f"{s['hit_tiers']['store_tokens']:,}" if s.get("hit_tiers") else "-"),
    ("ideal hit rate (unlimited)", lambda s: f"{s['ideal_token_hit_rate']:.1%}"),
    ("TTFT p50 / p90 / p99 ms", lambda s: f"{s['ttft_ms']['p50']:.0f} / {s['ttft_ms']['p90']:.0f} / "
                                          f"{s['ttft_ms']['p99']:.0f}"),
    ("TTFT p50 vs none", lambda s: f"{s['ttft_p50_vs_none']:.2f}x" if "ttft_p50_vs_none" in s else "-"),
    ("prefill tokens computed", lambda s: f"{s['prefill_tokens_computed']:,}"),
    ("prefill compute s", lambda s: f"{s['prefill_compute_s']:.2f}"),
    ("per request ms: prefill compute", lambda s: f"{s['kv_ms_per_request']['prefill_compute']:.1f}"),
    ("per request ms: KV lookup / load / store", lambda s: _kv_ms(s['kv_ms_per_request'])),
    ("per request ms: answer waits for its blocks", lambda s: f"{s['kv_ms_per_request']['store_wait']:.1f}"),
    ("KV read / written MB", lambda s: f"{s['kv_bytes_read'] / 1e6:.1f} / {s['kv_bytes_written'] / 1e6:.1f}"),
    ("KV read MB/s (break-even)", lambda s: f"{s['kv_read_bandwidth_mb_s']:.0f} ({s['break_even_bandwidth_mb_s']:.1f})"),
    ("$ per M input tokens", lambda s: f"{s['cost_per_million_input_usd']:.4f}"),
    ("saving vs none", lambda s: f"{s['cost_saving_vs_none']:.1%}" if "cost_saving_vs_none" in s else "-"),
]


def _kv_ms(t: dict[str, float | None]) -> str:
    store = f"{t['store']:.1f}" if t["store"] is not None else f"{t['store_handoff']:.1f}*"
    return f"{t['lookup']:.1f} / {t['load']:.1f} / {store}"


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    """One column per scenario, so the table fits a terminal whatever the number of figures."""
    console = console or Console()
    table = Table(title=f"KV cache comparison, model {report['model']['name']}")
    table.add_column("")
    for name in report["scenarios"]:
        table.add_column(name, justify="right")
    for label, fmt in ROWS:
        table.add_row(label, *(fmt(s) for s in report["scenarios"].values()))
    console.print(table)
    console.print("KV store: time on the engines' write-behind threads per request (TTFT never waits "
                  "for it; * = the requests' own hand-off time, when the engines' counters are unknown)")


def write_outputs(report: dict[str, Any], results: dict[str, list[dict]], report_dir: Path,
                  json_path: Path | None) -> list[Path]:
    """The JSON report, a CSV of every request (all scenarios, and one per scenario), the plots."""
    report_dir.mkdir(parents=True, exist_ok=True)
    csv_path = report_dir / "requests.csv"
    write_csv([dict(row, scenario=name) for name, rows in results.items() for row in rows], csv_path,
              leading=("scenario",))
    for name, rows in results.items():
        (report_dir / name).mkdir(exist_ok=True)
        write_csv(rows, report_dir / name / "requests.csv")
    target = json_path or report_dir / "report.json"
    target.write_text(json.dumps(report, indent=2))
    return [csv_path, target, *plot_all(report, results, report_dir)]
