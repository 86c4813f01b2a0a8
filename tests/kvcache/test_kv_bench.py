"""`chainfs bench kv` runs end to end (one repetition, small blocks) and writes the JSON it promises.

Not a speed test: only that every backend stored, found and returned the same blocks, and the
report's shape. The figures themselves come from the benchmark command."""

from __future__ import annotations

import json
import shutil

import pytest

from chainfs.cli.main import main

pytestmark = pytest.mark.integration


def test_bench_kv_writes_results_for_every_backend(tmp_path, capsys) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/install_sysdeps.sh installs it)")
    out = tmp_path / "kv.json"
    assert main(["bench", "kv", "--reps", "1", "--sizes", "16k", "--backends", "chainfs,file,redis",
                 "--no-fsync", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {f"{b}/16k/{op}" for b in ("chainfs", "file", "redis")
                            for op in ("store", "lookup", "load", "lookup_load")}
    assert all(r["ms"] > 0 for r in results.values())
    assert all(results[f"redis/16k/{op}"]["ratio_to_redis"] == 1.0 for op in ("store", "lookup", "load"))
    assert results["chainfs/16k/load"]["ratio_to_redis"] == pytest.approx(
        results["chainfs/16k/load"]["ms"] / results["redis/16k/load"]["ms"], rel=0.01)
    assert "KV work per batch" in capsys.readouterr().out
    assert main(["bench", "kv", "--backends", "nosuch"]) != 0
