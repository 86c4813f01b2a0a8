"""TTFT of a vLLM request whose prefix comes from chainfs, against vLLM's own in-memory prefix hit
and a cold prefill, measured in one run (a benchmark, not a test: `make bench-vllm`).

Two vLLM servers (ChainfsConnector on one local chainfs cluster) serve the `medium` model
(~120 M parameters). Each round takes a fresh prompt P and measures, back to back:
    cold    A computes P (nothing cached anywhere; A then saves P's blocks to chainfs)
    memory  A again: vLLM's own prefix cache holds P
    chainfs B, which never saw P: its prefix comes from A's blocks in chainfs
TTFT is the latency of a 1-token completion (prefill plus one sampling step), the same for all
three; the figures are medians over the rounds. Also reported: each server's start-up time, and
B's connector time per load (from its counters).

    .venv-vllm/bin/python bench/bench_vllm.py [--rounds 7] [--prompt-tokens 1800] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.integrations.vllm_server import connector_config, start_servers, vllm_python


def ttft_ms(server, prompt: list[int]) -> tuple[float, dict]:
    t = time.perf_counter()
    resp = server.complete(prompt, max_tokens=1, logprobs=None)
    return (time.perf_counter() - t) * 1000, resp


def counters(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a model directory (default: build the medium model in a temp dir)")
    ap.add_argument("--rounds", type=int, default=7)
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
        stats = [work / "a.json", work / "b.json"]
        kvs = [connector_config(f"{cluster.url}/kv", stats_path=str(p)) for p in stats]
        a, b = start_servers(stack, 2, model, work / "logs", kvs, threads=1, max_model_len=4096)
        rng = random.Random(0)
        warm = [rng.randrange(10, 8000) for _ in range(300)]
        a.complete(warm, max_tokens=1, logprobs=None)
        b.complete(warm[::-1], max_tokens=1, logprobs=None)
        rows = []
        for r in range(args.rounds):
            p = [rng.randrange(10, 8000) for _ in range(args.prompt_tokens)]
            stored = counters(stats[0]).get("write_behind", {}).get("stored_blocks", 0)
            cold, first = ttft_ms(a, p)
            blocks = (len(p) - 1) // 128
            wait_for(lambda: counters(stats[0]).get("write_behind", {}).get("stored_blocks", 0) >= stored + blocks,
                     60, "A's blocks to reach chainfs")
            mem, second = ttft_ms(a, p)
            load_before = counters(stats[1]).get("connector", {}).get("load_s", 0.0)
            shared, third = ttft_ms(b, p)
            try:  # the stats file is rewritten twice a second
                wait_for(lambda: counters(stats[1]).get("connector", {}).get("load_s", 0.0) > load_before, 5,
                         "B's counters")
            except TimeoutError:
                pass
            load_ms = 1000 * (counters(stats[1]).get("connector", {}).get("load_s", 0.0) - load_before)
            cached = [x["usage"]["prompt_tokens_details"]["cached_tokens"] for x in (first, second, third)]
            rows.append({"cold_ms": cold, "memory_ms": mem, "chainfs_ms": shared, "chainfs_load_ms": load_ms,
                         "cached_tokens": cached})
            print(f"round {r}: cold {cold:.0f} ms, memory hit {mem:.0f} ms, chainfs hit {shared:.0f} ms "
                  f"(load {load_ms:.0f} ms), cached {cached}", file=sys.stderr)
        med = {k: statistics.median(r[k] for r in rows)
               for k in ("cold_ms", "memory_ms", "chainfs_ms", "chainfs_load_ms")}
        out = {
            "model": "medium", "prompt_tokens": args.prompt_tokens, "rounds": args.rounds,
            "median_ttft_ms": med,
            "chainfs_vs_memory": med["chainfs_ms"] / med["memory_ms"],
            "chainfs_vs_cold": med["chainfs_ms"] / med["cold_ms"],
            "start_s": {"a": round(a.start_s, 1), "b": round(b.start_s, 1)},
            "rows": rows,
        }
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
