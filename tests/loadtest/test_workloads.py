"""Workload generators, trace replay, the offline ideal replay and the report: no servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainfs.engine.presets import get_preset
from chainfs.loadtest.calibrate import calibrate
from chainfs.loadtest.generators import CalibratedConfig, QAConfig, calibrated, multi_round_qa
from chainfs.loadtest.ideal import capacity_curve, max_reusable, replay
from chainfs.loadtest.report import build_report, hit_rate_over_time, scenario_figures
from chainfs.loadtest.trace import load_trace
from chainfs.loadtest.workload import Request, group_sessions, load, save

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
CONVERSATION = TRACES / "mooncake_conversation.jsonl"
SYNTHETIC = TRACES / "mooncake_synthetic.jsonl"
needs_traces = pytest.mark.skipif(not CONVERSATION.exists(), reason=f"traces not found at {TRACES}")


def _trace(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_trace_replay_maps_hash_ids_to_shared_tokens(tmp_path: Path) -> None:
    path = _trace(tmp_path, [
        {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [1, 2]},
        {"timestamp": 500, "input_length": 1200, "output_length": 7, "hash_ids": [1, 2, 3]},
        {"timestamp": 900, "input_length": 300, "output_length": 0, "hash_ids": [9]},
    ])
    reqs = load_trace(path, vocab_size=256, length_scale=8, time_scale=0.5)
    assert [r.prompt_tokens for r in reqs] == [125, 150, 37]
    assert reqs[1].prompt[:125] == reqs[0].prompt, "equal hash ids must give equal tokens"
    assert reqs[2].prompt[:37] != reqs[0].prompt[:37]
    assert [r.arrival_s for r in reqs] == [0.0, 0.25, 0.45]
    assert [r.max_tokens for r in reqs] == [1, 1, 1]
    assert all(0 <= t < 256 for r in reqs for t in r.prompt)
    assert load_trace(path, 256, length_scale=8) [0].prompt == reqs[0].prompt, "deterministic"
    assert [r.prompt_tokens for r in load_trace(path, 256, 8, max_requests=2, max_prompt_tokens=130)] == [125, 130]


@pytest.mark.parametrize("line, message", [
    ("not json", "not a Mooncake record"),
    ('{"timestamp": 0, "input_length": 2000, "output_length": 1, "hash_ids": [1]}', "cannot cover"),
    ('{"timestamp": 0, "input_length": -5, "output_length": 1, "hash_ids": [1]}', "bad field"),
])
def test_bad_trace_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        load_trace(path, 256)
    with pytest.raises(ValueError, match="length_scale"):
        load_trace(_trace(tmp_path, []), 256, length_scale=3)


def test_ideal_replay_counts_leading_full_blocks() -> None:
    a = Request(0, 0, 0, 0.0, list(range(200)), 1)
    b = Request(1, 1, 0, 0.0, list(range(150)) + [7] * 50, 1)
    c = Request(2, 2, 0, 0.0, list(range(200)), 1)
    result = replay([a, b, c], block_tokens=64)
    # b shares 2 full blocks (128 tokens) with a; c equals a but must recompute its last token,
    # so only (200 - 1) // 64 = 3 blocks are reusable.
    assert result.per_request_hits == [0, 128, 192]
    assert max_reusable(200, 64) == 192 and max_reusable(129, 64) == 128 and max_reusable(0, 64) == 0
    assert result.token_hit_rate == pytest.approx(320 / 600)
    lru = replay([a, b, c], block_tokens=64, capacity_blocks=3)
    assert lru.per_request_hits[2] < 192, "a 3-block LRU cannot keep a's blocks through b"


def test_capacity_curve_rises_to_the_unlimited_rate() -> None:
    reqs = multi_round_qa(QAConfig(users=4, rounds=3), vocab_size=256)
    curve = capacity_curve(reqs, 64)
    rates = [r for _, r in curve]
    assert rates == sorted(rates)
    assert rates[-1] == pytest.approx(replay(reqs, 64).token_hit_rate)


def test_multi_round_qa_sessions_extend_their_history() -> None:
    cfg = QAConfig(users=3, rounds=3, system_prompt_tokens=64)
    reqs = multi_round_qa(cfg, vocab_size=256)
    sessions = group_sessions(reqs)
    assert len(sessions) == 3 and all(len(s.requests) == 3 for s in sessions)
    for s in sessions:
        for prev, nxt in zip(s.requests, s.requests[1:]):
            assert nxt.prompt[:prev.prompt_tokens] == prev.prompt
    assert len({tuple(s.requests[0].prompt[:64]) for s in sessions}) == 1, "one shared system prompt"
    assert [r.index for r in reqs] == list(range(len(reqs)))


def test_workload_round_trips_through_jsonl(tmp_path: Path) -> None:
    reqs = multi_round_qa(QAConfig(users=2, rounds=2), vocab_size=256)
    save(reqs, tmp_path / "w.jsonl")
    assert load(tmp_path / "w.jsonl") == reqs


@needs_traces
def test_calibrated_defaults_match_the_conversation_trace() -> None:
    measured = calibrate(CONVERSATION)
    cfg = CalibratedConfig()
    for key in ("session_rate_per_s", "mean_turns", "first_turn_median", "first_turn_sigma", "growth_median",
                "growth_sigma", "gap_median_s", "gap_sigma", "output_median", "output_sigma"):
        assert getattr(cfg, key) == pytest.approx(measured[key], rel=0.02), key


def test_calibrated_generator_follows_its_config() -> None:
    reqs = calibrated(CalibratedConfig(sessions=400), vocab_size=256, length_scale=8, max_prompt_tokens=2000)
    sessions = group_sessions(reqs)
    mean_turns = len(reqs) / len(sessions)
    assert 1.4 < mean_turns < 1.9
    assert all(r.prompt_tokens <= 2000 for r in reqs)
    assert len({tuple(r.prompt[:64]) for r in reqs}) == 1, "every request starts with the system prompt"
    assert 0.05 < replay(reqs, 64).token_hit_rate < 0.9


@needs_traces
@pytest.mark.parametrize("trace, expected", [(CONVERSATION, 0.374), (SYNTHETIC, 0.651)])
def test_offline_ideal_of_the_whole_traces_matches_the_published_figure(trace: Path, expected: float) -> None:
    reqs = load_trace(trace, vocab_size=256, length_scale=8)
    assert replay(reqs, 64).token_hit_rate == pytest.approx(expected, abs=0.005)


def test_report_figures() -> None:
    model = get_preset("tiny")
    rows = [
        dict(index=0, ok=True, sent_s=0.0, prompt_tokens=100, hit_tokens=0, ttft_ms=50.0, prefill_compute_ms=40.0,
             kv_load_ms=0.0, kv_bytes_read=0, kv_bytes_written=1000),
        dict(index=1, ok=True, sent_s=1.0, prompt_tokens=100, hit_tokens=64, ttft_ms=20.0, prefill_compute_ms=15.0,
             kv_load_ms=1.0, kv_bytes_read=64 * model.kv_bytes_per_token, kv_bytes_written=0),
        dict(index=2, ok=False, sent_s=2.0, prompt_tokens=100, hit_tokens=0, ttft_ms=0.0, prefill_compute_ms=0.0,
             kv_load_ms=0.0, kv_bytes_read=0, kv_bytes_written=0),
    ]
    s = scenario_figures(rows, ideal_rate=0.5, model=model)
    assert (s["requests"], s["errors"], s["prompt_tokens"], s["hit_tokens"]) == (3, 1, 300, 64)
    assert s["token_hit_rate"] == pytest.approx(64 / 300)
    assert s["prefill_tokens_computed"] == 136
    assert s["cost_per_million_input_usd"] == pytest.approx((64 * 0.14 + 236 * 0.55) / 300)
    assert s["kv_read_bandwidth_mb_s"] == pytest.approx(64 * model.kv_bytes_per_token / 1e-3 / 1e6)
    series = hit_rate_over_time(rows, buckets=2)
    assert series[-1][1] == pytest.approx(64 / 100)       # the second window alone
    assert series[-1][2] == pytest.approx(64 / 200)       # everything answered so far
    reqs = [Request(i, i, 0, 0.0, list(range(100)), 1) for i in range(3)]
    report = build_report({"none": rows, "shared": rows}, reqs, model, 64, {})
    assert report["ideal_token_hit_rate"] == pytest.approx(128 / 300)
    assert set(report["scenarios"]["shared"]) >= {"requests", "errors", "prompt_tokens", "hit_tokens",
                                                  "token_hit_rate", "ideal_token_hit_rate", "ttft_ms",
                                                  "prefill_tokens_computed", "cost_per_million_input_usd"}
    assert report["scenarios"]["shared"]["cost_saving_vs_none"] == 0.0
