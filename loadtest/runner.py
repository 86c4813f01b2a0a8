"""`chainfs loadtest run`: one comparison of the scenarios none / local / shared, end to end.

For each scenario it starts E engines (and, for `shared`, a local chainfs cluster), drives the same
workload through locust, stops everything, and hands the per-request rows to the report.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from chainfs.cluster import LocalCluster
from chainfs.engine.presets import ModelConfig, get_preset
from chainfs.loadtest.generators import CalibratedConfig, QAConfig, calibrated, multi_round_qa
from chainfs.loadtest.services import engine_health, run_locust, start_engines
from chainfs.loadtest.stats import read_csv
from chainfs.loadtest.trace import load_trace
from chainfs.loadtest.workload import CHAT_VOCAB, USER_MARKER, Request, as_user_message, save

log = logging.getLogger(__name__)

SCENARIOS = ("none", "local", "shared")
ENGINE_STATS = "engines.json"


@dataclass
class RunConfig:
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    engines: int = 2
    model: str = "small"
    workload: str = "calibrated"       # calibrated | qa | trace
    trace: str | None = None
    length_scale: int = 8
    time_scale: float = 0.0            # 0: send as soon as a user is free (and the session allows)
    max_requests: int | None = None
    max_tokens: int = 4
    sessions: int = 40                 # calibrated generator
    qa: QAConfig = field(default_factory=QAConfig)
    concurrency: int = 2
    duration: float | None = None
    capacity: int | None = None        # bytes per cache (None: unlimited)
    block_tokens: int = 64
    routing: str = "round_robin"
    engine: str = "numpy"              # numpy (chainfs engine serve) | vllm (vLLM OpenAI servers)
    model_dir: Path | None = None      # vllm: the model directory (`chainfs model build-tiny`)
    fsync: bool = True                 # storage nodes of the shared scenario fsync every chunk
    report_dir: Path = Path("loadtest-report")
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown or not self.scenarios:
            raise ValueError(f"scenarios must be among {SCENARIOS}, got {self.scenarios}")
        if self.engines < 1 or self.concurrency < 1:
            raise ValueError("engines and concurrency must be >= 1")
        if self.workload not in ("calibrated", "qa", "trace"):
            raise ValueError(f"unknown workload {self.workload!r}")
        if self.workload == "trace" and not self.trace:
            raise ValueError("the trace workload needs --trace PATH")
        if self.block_tokens < 1 or (self.capacity is not None and self.capacity < 0):
            raise ValueError("block_tokens must be >= 1 and capacity >= 0")
        if self.engine not in ("numpy", "vllm"):
            raise ValueError(f"unknown engine {self.engine!r} (numpy or vllm)")
        if self.engine == "vllm" and (self.model_dir is None or self.block_tokens % 32):
            raise ValueError("--engine vllm needs --model-dir and a --block-tokens multiple of 32 (vLLM's CPU blocks)")


def engine_model(cfg: RunConfig) -> ModelConfig:
    """The served model's shape: a numpy preset, or the vLLM model directory's config."""
    if cfg.engine == "vllm":
        from chainfs.integrations.hf_model import model_config
        from chainfs.loadtest.vllm_engines import MAX_MODEL_LEN

        assert cfg.model_dir is not None
        return model_config(cfg.model_dir, MAX_MODEL_LEN)
    return get_preset(cfg.model)


def build_workload(cfg: RunConfig) -> list[Request]:
    """The requests as the engines will see them: each prompt is one chat user message."""
    model = engine_model(cfg)
    room = model.max_context - cfg.max_tokens
    content_room = room - len(USER_MARKER)
    if cfg.workload == "trace":
        assert cfg.trace is not None
        reqs = load_trace(cfg.trace, CHAT_VOCAB, cfg.length_scale, cfg.time_scale, cfg.max_requests,
                          max_prompt_tokens=content_room, max_output_tokens=cfg.max_tokens)
    elif cfg.workload == "qa":
        reqs = multi_round_qa(cfg.qa, CHAT_VOCAB, seed=cfg.seed)
    else:
        reqs = calibrated(CalibratedConfig(sessions=cfg.sessions), CHAT_VOCAB, cfg.length_scale,
                          cfg.time_scale, max_prompt_tokens=content_room, max_tokens=cfg.max_tokens, seed=cfg.seed)
    if cfg.max_requests is not None:
        reqs = reqs[:cfg.max_requests]
    for r in reqs:
        r.prompt = as_user_message(r.prompt)
    too_long = [r.index for r in reqs if r.prompt_tokens > room]
    if too_long:
        raise ValueError(f"{len(too_long)} prompts exceed the {model.name} context; lower them")
    return reqs


def run_comparison(cfg: RunConfig, requests: list[Request] | None = None,
                   progress: Callable[[str], None] = log.info) -> dict[str, list[dict]]:
    """Runs every scenario on `requests` (built from cfg if not given); returns each one's rows."""
    requests = build_workload(cfg) if requests is None else requests
    cfg.report_dir.mkdir(parents=True, exist_ok=True)
    workload_path = cfg.report_dir / "workload.jsonl"
    save(requests, workload_path)
    results: dict[str, list[dict]] = {}
    for scenario in cfg.scenarios:
        progress(f"scenario {scenario}: {len(requests)} requests, {cfg.engines} engines, "
                 f"concurrency {cfg.concurrency}")
        results[scenario] = run_scenario(cfg, scenario, workload_path)
    return results


def run_scenario(cfg: RunConfig, scenario: str, workload_path: Path) -> list[dict]:
    out = cfg.report_dir / scenario
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("requests.csv", "summary.json", ENGINE_STATS):
        (out / stale).unlink(missing_ok=True)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"chainfs-lt-{scenario}-")))
        if scenario == "none":
            caches = ["none"] * cfg.engines
        elif scenario == "local":
            caches = [f"file://{work}/cache-{i}" for i in range(cfg.engines)]
        else:
            cluster = stack.enter_context(LocalCluster(work / "cluster", storage_nodes=3, replicas=3,
                                                          fsync=cfg.fsync))
            caches = [f"{cluster.url}/kvcache"] * cfg.engines
        if cfg.engine == "vllm":
            from chainfs.loadtest.vllm_engines import start_vllm, vllm_engine_stats

            assert cfg.model_dir is not None
            servers, stats_files = start_vllm(stack, cfg.engines, cfg.model_dir, caches, out / "logs",
                                              cfg.block_tokens, cfg.capacity)
            urls = [s.url for s in servers]
        else:
            engines = start_engines(stack, cfg.engines, cfg.model, caches, out / "logs", cfg.block_tokens,
                                    cfg.capacity)
            urls = [e.url for e in engines]
        run_locust(workload_path, urls, out, cfg.concurrency, cfg.routing, cfg.duration,
                   out / "logs" / "locust.log", timeout=(cfg.duration or 3600) + 300,
                   api="completions" if cfg.engine == "vllm" else "chat")
        stats = (vllm_engine_stats(servers, stats_files) if cfg.engine == "vllm"
                 else [engine_health(u) for u in urls])
        (out / ENGINE_STATS).write_text(json.dumps(stats, indent=2))
    return read_csv(out / "requests.csv")


def load_engine_stats(report_dir: Path, scenarios: list[str]) -> dict[str, list[dict]]:
    """Each scenario's engines' /health at the end of its run (cache and write-behind counters)."""
    out: dict[str, list[dict]] = {}
    for name in scenarios:
        path = report_dir / name / ENGINE_STATS
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out
