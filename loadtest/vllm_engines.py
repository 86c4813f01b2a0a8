"""The vLLM side of `chainfs loadtest run --engine vllm`: E vLLM OpenAI servers per scenario.

`none` is vLLM's own in-memory prefix cache only; `local` adds ChainfsConnector on a `file://`
store per server; `shared` adds it on one chainfs store. Each connector writes its counters to a
file in the scenario's log folder; after the run they become the scenario's engine stats (chainfs
tokens loaded, blocks and bytes written), beside the hits vLLM reports per request.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from chainfs.integrations.vllm_server import VLLMServer, connector_config, start_servers
from chainfs.integrations.vllm_support import scheduler_stats_path

MAX_MODEL_LEN = 4096


def start_vllm(stack: ExitStack, count: int, model_dir: Path, caches: list[str], log_dir: Path,
               block_tokens: int, capacity: int | None) -> tuple[list[VLLMServer], list[Path | None]]:
    """Servers on `caches` ("none" or a store URL); returns them and their connectors' stats files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stats: list[Path | None] = []
    kvs: list[dict[str, Any] | None] = []
    for i, cache in enumerate(caches):
        if cache == "none":
            stats.append(None)
            kvs.append(None)
        else:
            path = log_dir / f"vllm-{i}-connector.json"
            path.unlink(missing_ok=True)
            Path(scheduler_stats_path(str(path))).unlink(missing_ok=True)
            stats.append(path)
            kvs.append(connector_config(cache, capacity, stats_path=str(path)))
    threads = max(1, (os.cpu_count() or 1) // count)
    servers = start_servers(stack, count, model_dir, log_dir, kvs, threads=threads, block_size=block_tokens,
                            max_model_len=MAX_MODEL_LEN)
    return servers, stats


def vllm_engine_stats(servers: list[VLLMServer], stats: list[Path | None],
                      drained_within: float = 30.0) -> list[dict[str, Any]]:
    """Each server's start-up time and its connector's counters once its saves are written."""
    out = []
    for server, path in zip(servers, stats):
        info: dict[str, Any] = {"url": server.url, "start_s": round(server.start_s, 2)}
        end = time.monotonic() + drained_within
        while path is not None:
            try:
                data = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                data = {}
            if (data and data.get("write_behind", {}).get("pending_bytes", 1) <= 0) or time.monotonic() >= end:
                info.update(data)
                break
            time.sleep(0.2)
        if path is not None:
            try:
                info["scheduler"] = json.loads(Path(scheduler_stats_path(str(path))).read_text()).get("connector", {})
            except (FileNotFoundError, ValueError):
                pass
        out.append(info)
    return out


def tiers(engines: list[dict[str, Any]] | None, hit_tokens: int) -> dict[str, int] | None:
    """Hit tokens by tier: what the connectors loaded from their stores (file:// or chainfs), the rest
    from vLLM's own memory."""
    if not engines or not any("url" in e for e in engines):
        return None
    loaded = sum(int(e.get("connector", {}).get("loaded_tokens", 0)) for e in engines)
    store = [e.get("store", {}) for e in engines]
    return {"vllm_memory_tokens": hit_tokens - loaded, "store_tokens": loaded,
            "kv_bytes_read": sum(int(s.get("bytes_read", 0)) for s in store),
            "kv_bytes_written": sum(int(s.get("bytes_written", 0)) for s in store)}
