"""The comparison end to end on a small multi-round workload: shared beats local on hit rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainfs.engine.presets import get_preset
from chainfs.loadtest.generators import QAConfig
from chainfs.loadtest.ideal import replay
from chainfs.loadtest.report import build_report, write_outputs
from chainfs.loadtest.runner import RunConfig, build_workload, load_engine_stats, run_comparison

pytestmark = pytest.mark.integration


def test_shared_beats_local_when_sessions_move_between_engines(tmp_path: Path) -> None:
    pytest.importorskip("chainfs.client.fsspec.fs")
    qa = QAConfig(users=4, rounds=3, system_prompt_tokens=128, history_tokens=64, question_tokens=40,
                  answer_tokens=40, max_tokens=1, request_rate=8.0, turn_gap_s=0.2)
    cfg = RunConfig(scenarios=["none", "local", "shared"], engines=2, model="tiny", workload="qa", qa=qa,
                    concurrency=1, routing="round_robin", report_dir=tmp_path)
    requests = build_workload(cfg)
    results = run_comparison(cfg, requests)
    report = build_report(results, requests, get_preset("tiny"), cfg.block_tokens, {},
                          load_engine_stats(tmp_path, cfg.scenarios))
    s = report["scenarios"]
    assert all(s[name]["requests"] == len(requests) and s[name]["errors"] == 0 for name in s)
    assert s["none"]["hit_tokens"] == 0
    # Round robin sends consecutive turns of a session to different engines: only a shared store
    # keeps their prefixes; with one request at a time it gets exactly the offline ideal (stores
    # are write-behind, but an answer waits for its own blocks, so the next turn finds them).
    assert s["shared"]["token_hit_rate"] == pytest.approx(replay(requests, cfg.block_tokens).token_hit_rate)
    assert s["shared"]["token_hit_rate"] > s["local"]["token_hit_rate"]
    assert s["shared"]["cost_per_million_input_usd"] < s["none"]["cost_per_million_input_usd"]
    assert s["shared"]["kv_bytes_read"] > 0 and s["shared"]["kv_bytes_written"] > 0
    kv = s["shared"]["kv_ms_per_request"]  # the engines' write-behind time was collected
    assert kv["store"] is not None and kv["store"] > 0 and kv["lookup"] > 0 and kv["prefill_compute"] > 0
    assert s["shared"]["write_behind"]["stored_blocks"] > 0 and s["shared"]["write_behind"]["dropped_blocks"] == 0
    paths = write_outputs(report, results, tmp_path / "report", None)
    assert {p.name for p in paths} >= {"requests.csv", "report.json", "hit_rate_over_time.png",
                                       "ttft_distribution.png", "hit_rate_vs_capacity.png"}
    assert all(p.stat().st_size > 0 for p in paths)
