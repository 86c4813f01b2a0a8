"""TTFT of a vLLM request whose prefix comes from chainfs, against vLLM's own in-memory prefix hit
and a cold prefill, measured in one run (a benchmark, not a test: `make bench-vllm`).

Two vLLM servers (ChainfsConnector on one local chainfs cluster) serve the `medium` model
(~120 M parameters). Each round takes a fresh prompt P and measures, back to back:
    cold    A computes P (nothing cached anywhere); its answer waits until P's blocks are in chainfs
    memory  A again: vLLM's own prefix cache holds P
    chainfs B, which never saw P: its prefix comes from A's blocks in chainfs
    memory  A once more (a memory hit on each side of the chainfs one, so both see the same noise)
TTFT is the latency of a 1-token completion (prefill plus one sampling step), the same for all;
the figures are medians over the rounds. Also reported: each server's start-up time, the 1-minute
load average at start and end, and per request (from the connector's kv_transfer_params) B's
lookup and load times and the time A's cold answer waited for its blocks to be stored.

    .venv-vllm/bin/python bench/bench_vllm.py [--rounds 12] [--prompt-tokens 1800] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from chainfs.cluster import LocalCluster
from chainfs.integrations.vllm_server import connector_config, start_servers, vllm_python


def ttft_ms(server, prompt: list[int]) -> tuple[float, dict]:
    t = time.perf_counter()
    resp = server.complete(prompt, max_tokens=1, logprobs=None)
    return (time.perf_counter() - t) * 1000, resp


def load_s(path: Path, above: float | None = None) -> float:
    """The worker's total load time from its stats file; with `above`, waits (5 s at most) until it
    is past that (the file is rewritten twice a second)."""
    end = time.monotonic() + (5.0 if above is not None else 0.0)
    while True:
        try:
            value = float(json.loads(path.read_text())["connector"]["load_s"])
        except (FileNotFoundError, ValueError, KeyError):
            value = 0.0
        if above is None or value > above or time.monotonic() >= end:
            return value
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a model directory (default: build the medium model in a temp dir)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--prompt-tokens", type=int, default=1800)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chainfs-bench-vllm-")))
        model = Path(args.model_dir) if args.model_dir else work / "medium"
        if not args.model_dir:
            t = time.perf_counter()
            subprocess.run([vllm_python(), "-m", "chainfs.cli.main", "model", "build-tiny", str(model),
                            "--size", "medium"], check=True, stdout=subprocess.DEVNULL)
            print(f"built the medium model in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        cluster = stack.enter_context(LocalCluster(work / "cluster", storage_nodes=3, replicas=3))
        b_stats = work / "b.json"  # B's worker counters: its load time (a 1-token request's answer
        # leaves before the worker's report of the load reaches the scheduler side's kv_transfer_params)
        kvs = [connector_config(f"{cluster.url}/kv"), connector_config(f"{cluster.url}/kv", stats_path=str(b_stats))]
        a, b = start_servers(stack, 2, model, work / "logs", kvs, threads=1, max_model_len=4096)
        rng = random.Random(0)
        warm = [rng.randrange(10, 8000) for _ in range(300)]
        a.complete(warm, max_tokens=1, logprobs=None)
        b.complete(warm[::-1], max_tokens=1, logprobs=None)
        rows = []
        load_avg = [os.getloadavg()]
        for r in range(args.rounds):
            p = [rng.randrange(10, 8000) for _ in range(args.prompt_tokens)]
            cold, first = ttft_ms(a, p)  # its answer waited until its blocks were in chainfs
            mem, second = ttft_ms(a, p)
            load_before = load_s(b_stats)
            shared, third = ttft_ms(b, p)
            mem2, _ = ttft_ms(a, p)  # memory hits on both sides of the chainfs one: the same noise
            info = [(x.get("kv_transfer_params") or {}).get("chainfs", {}) for x in (first, second, third)]
            cached = [x["usage"]["prompt_tokens_details"]["cached_tokens"] for x in (first, second, third)]
            rows.append({"cold_ms": cold, "memory_ms": [mem, mem2], "chainfs_ms": shared,
                         "chainfs_load_ms": 1000 * (load_s(b_stats, above=load_before) - load_before),
                         "chainfs_lookup_ms": info[2].get("lookup_ms", 0.0),
                         "memory_lookup_ms": info[1].get("lookup_ms", 0.0),
                         "cold_save_wait_ms": info[0].get("save_wait_ms", 0.0), "cached_tokens": cached})
            print(f"round {r}: cold {cold:.0f} ms (save wait {rows[-1]['cold_save_wait_ms']:.0f}), memory hit "
                  f"{mem:.0f}/{mem2:.0f} ms, chainfs hit {shared:.0f} ms (lookup {rows[-1]['chainfs_lookup_ms']:.1f}, "
                  f"load {rows[-1]['chainfs_load_ms']:.1f}), cached {cached}", file=sys.stderr)
        load_avg.append(os.getloadavg())
        med = {k: statistics.median(r[k] for r in rows)
               for k in ("cold_ms", "chainfs_ms", "chainfs_load_ms", "chainfs_lookup_ms", "memory_lookup_ms",
                         "cold_save_wait_ms")}
        med["memory_ms"] = statistics.median(m for r in rows for m in r["memory_ms"])
        out = {
            "model": "medium", "prompt_tokens": args.prompt_tokens, "rounds": args.rounds,
            "median_ttft_ms": med,
            "chainfs_vs_memory": med["chainfs_ms"] / med["memory_ms"],
            "chainfs_vs_cold": med["chainfs_ms"] / med["cold_ms"],
            "start_s": {"a": round(a.start_s, 1), "b": round(b.start_s, 1)},
            "load_avg_1m": [round(x[0], 2) for x in load_avg],
            "rows": rows,
        }
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
