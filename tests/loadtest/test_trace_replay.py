"""Trace replay through real engines on a shared chainfs store matches the offline ideal."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainfs.loadtest.ideal import replay
from chainfs.loadtest.runner import RunConfig, build_workload, run_comparison

pytestmark = pytest.mark.integration

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"


@pytest.mark.parametrize("name", ["mooncake_conversation.jsonl", "mooncake_synthetic.jsonl"])
def test_shared_hit_rate_equals_offline_ideal(tmp_path: Path, name: str) -> None:
    pytest.importorskip("chainfs.client.fsspec.fs")
    trace = TRACES / name
    if not trace.exists():
        pytest.skip(f"trace not found: {trace}")
    # Length scale 8 makes one trace block (512 tokens) exactly one 64-token cache block. Hits are
    # what is measured here, not durability, so the storage nodes skip fsync.
    cfg = RunConfig(scenarios=["shared"], engines=2, model="tiny", workload="trace", trace=str(trace),
                    length_scale=8, max_requests=500, max_tokens=1, concurrency=1, fsync=False,
                    report_dir=tmp_path)
    requests = build_workload(cfg)
    rows = run_comparison(cfg, requests)["shared"]
    assert len(rows) == 500 and all(r["ok"] for r in rows)
    ideal = replay(requests, cfg.block_tokens)
    measured = sum(r["hit_tokens"] for r in rows) / sum(r["prompt_tokens"] for r in rows)
    assert ideal.token_hit_rate > 0.05
    assert measured == pytest.approx(ideal.token_hit_rate, abs=0.01)
    assert len({r["engine"] for r in rows}) == 2, "requests must reach both engines"
