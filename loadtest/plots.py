"""PNG plots of a comparison: hit rate over time, TTFT distribution, hit rate against capacity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_all(report: dict[str, Any], results: dict[str, list[dict]], out: Path) -> list[Path]:
    return [hit_rate_over_time(report, out / "hit_rate_over_time.png"),
            ttft_distribution(results, out / "ttft_distribution.png"),
            hit_rate_vs_capacity(report, out / "hit_rate_vs_capacity.png")]


def hit_rate_over_time(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in report["scenarios"].items():
        series = s["hit_rate_over_time"]
        if series:
            line, = ax.plot([p[0] for p in series], [100 * p[2] for p in series], lw=2, label=f"{name} (cumulative)")
            ax.plot([p[0] for p in series], [100 * p[1] for p in series], ls="none", marker="o", ms=3,
                    alpha=0.5, color=line.get_color())
    ax.axhline(100 * report["ideal_token_hit_rate"], color="grey", ls="--", lw=1, label="ideal (unlimited)")
    ax.set(xlabel="seconds into the run", ylabel="token hit rate (%)",
           title="Prefix-cache hit rate over time (dots: per window)",
           ylim=(0, 100))
    ax.legend()
    return _save(fig, path)


def ttft_distribution(results: dict[str, list[dict]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in results.items():
        ttft = np.sort([r["ttft_ms"] for r in rows if r["ok"]])
        if len(ttft):
            ax.plot(ttft, np.arange(1, len(ttft) + 1) / len(ttft), label=name)
    ax.set(xlabel="time to first token (ms)", ylabel="fraction of requests", title="TTFT distribution (CDF)")
    ax.set_xscale("log")
    ax.legend()
    return _save(fig, path)


def hit_rate_vs_capacity(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    curve = report["capacity_curve"]
    ax.plot([p["bytes"] / 2**20 for p in curve], [100 * p["token_hit_rate"] for p in curve], marker="o")
    ax.set(xlabel="cache capacity (MiB of KV)", ylabel="token hit rate (%)",
           title="Offline replay: hit rate against cache capacity (LRU)", ylim=(0, 100))
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
