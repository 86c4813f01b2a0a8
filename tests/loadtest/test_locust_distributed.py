"""locust's distributed mode (one master, two workers) counts the same hits as a single process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainfs.loadtest.generators import QAConfig, multi_round_qa
from chainfs.loadtest.services import EngineProcess, free_port
from chainfs.loadtest.stats import read_csv
from chainfs.loadtest.workload import CHAT_VOCAB, as_user_message, save

pytestmark = pytest.mark.integration

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"


def _locust(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                             "--loglevel", "WARNING", "--only-summary", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run_once(tmp: Path, name: str, workload: Path, distributed: bool) -> list[dict]:
    """A fresh engine and cache per run, so both runs start cold."""
    out = tmp / name
    with EngineProcess("tiny", f"file://{tmp}/cache-{name}", tmp / f"{name}-engine.log") as engine:
        env = {"CHAINFS_WORKLOAD": str(workload), "CHAINFS_ENGINES": engine.url, "CHAINFS_LOADTEST_OUT": str(out),
               "CHAINFS_WORKERS": "2" if distributed else "1"}
        if not distributed:
            procs = [_locust("-u", "2", "-r", "2", "--host", engine.url, env=env)]
        else:
            port = free_port()
            master = _locust("--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
                             "--master-bind-port", str(port), "-u", "2", "-r", "2", "--host", engine.url, env=env)
            workers = [_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), env=env)
                       for _ in range(2)]
            procs = [master, *workers]
        try:
            for p in procs:
                p.wait(timeout=240)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert (out / "requests.csv").exists(), procs[0].stdout.read().decode()[-2000:]
    return read_csv(out / "requests.csv")


def test_distributed_matches_single_process(tmp_path: Path) -> None:
    # No system prompt shared across sessions: each session's hits depend only on its own earlier
    # turns, so the hit counts are the same whatever the interleaving of sessions.
    cfg = QAConfig(users=6, rounds=3, system_prompt_tokens=0, history_tokens=128, question_tokens=40,
                   answer_tokens=40, max_tokens=1)
    requests = multi_round_qa(cfg, vocab_size=CHAT_VOCAB)
    for r in requests:
        r.prompt = as_user_message(r.prompt)  # what the chat API carries (see loadtest/workload.py)
    workload = tmp_path / "workload.jsonl"
    save(requests, workload)

    single = _run_once(tmp_path, "single", workload, distributed=False)
    dist = _run_once(tmp_path, "dist", workload, distributed=True)

    assert len(single) == len(dist) == len(requests)
    assert all(r["ok"] for r in single + dist)
    by_index = lambda rows: {r["index"]: (r["prompt_tokens"], r["hit_tokens"]) for r in rows}  # noqa: E731
    assert by_index(single) == by_index(dist)
    assert sum(r["hit_tokens"] for r in single) > 0
    assert {r["worker"] for r in single} == {0}
    assert {r["worker"] for r in dist} == {0, 1}, "both workers must have sent requests"
