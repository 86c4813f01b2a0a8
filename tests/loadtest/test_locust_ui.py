"""The load test in locust's web UI, looked at by a headless chromium: the KV-cache tab, the live
hit-rate chart, the HTML report; and locust's own stats hold only the real chat requests."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from chainfs.cluster.process import wait_for
from chainfs.loadtest.generators import QAConfig, multi_round_qa
from chainfs.loadtest.locust_main import LOCUSTFILE
from chainfs.loadtest.services import EngineProcess, free_port
from chainfs.loadtest.workload import CHAT_VOCAB, as_user_message, save

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
LINE_RGB = (31, 119, 180)  # #1f77b4, the cumulative hit-rate line of loadtest/kv_ui.py
SIZE = (1000, 760)


def chromium(tmp: Path, url: str, screenshot: Path | None = None) -> str:
    """The DOM after scripts ran (and a screenshot if asked), from a fresh headless chromium."""
    profile = tmp / f"profile-{os.urandom(4).hex()}"
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={SIZE[0]},{SIZE[1]}",
            "--virtual-time-budget=5000"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def line_pixels(png: Path) -> int:
    """Pixels of the hit-rate line's colour: zero when the chart did not render."""
    img = (image.imread(png)[..., :3] * 255).round().astype(int)
    assert img.shape[1] == SIZE[0] and img.shape[0] == SIZE[1]
    return int(np.all(np.abs(img - np.array(LINE_RGB)) <= 12, axis=-1).sum())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install_sysdeps.sh installs it)")
def test_web_ui_tab_chart_and_reports(tmp_path: Path) -> None:
    cfg = QAConfig(users=3, rounds=3, system_prompt_tokens=64, history_tokens=64, question_tokens=24,
                   answer_tokens=24, max_tokens=2)
    requests = multi_round_qa(cfg, vocab_size=CHAT_VOCAB)
    for r in requests:
        r.prompt = as_user_message(r.prompt)
    workload = tmp_path / "workload.jsonl"
    save(requests, workload)
    out, port = tmp_path / "out", free_port()
    web = f"http://127.0.0.1:{port}"
    with EngineProcess("tiny", f"file://{tmp_path}/kv", tmp_path / "engine.log", block_tokens=16) as engine:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1", "--web-port",
             str(port), "--autostart", "--autoquit", "60", "-u", "2", "-r", "2", "--host", engine.url,
             "--workload", str(workload), "--out", str(out), "--html", str(out / "locust.html"),
             "--csv", str(out / "locust"), "--loglevel", "WARNING"],
            stdout=(tmp_path / "locust.log").open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            def finished() -> bool:
                assert proc.poll() is None, (tmp_path / "locust.log").read_text()[-2000:]
                try:
                    return get(f"{web}/kv-cache/data")["requests"] == len(requests)
                except OSError:
                    return False

            wait_for(finished, 120, "every request to be answered", interval=0.2)
            data = get(f"{web}/kv-cache/data")
            assert data["errors"] == 0 and data["cached_tokens"] > 0
            shown = f"{100 * data['hit_rate']:.1f}%"

            dom = chromium(tmp_path, f"{web}/kv-cache")
            assert f'data-points="{len(requests)}"' in dom and f"<b id=\"hit-rate\">{shown}</b>" in dom
            live = tmp_path / "kv-cache.png"
            chromium(tmp_path, f"{web}/kv-cache", live)
            assert line_pixels(live) > 200, "the hit-rate line is not on the screenshot"

            tab = chromium(tmp_path, f"{web}/?tab=kv-cache")
            assert "Cached tokens" in tab and str(data["cached_tokens"]) in tab, "the KV cache tab lacks its table"
            chromium(tmp_path, f"{web}/?tab=kv-cache", tmp_path / "locust-tab.png")

            stats = get(f"{web}/stats/requests")
            assert {s["name"] for s in stats["stats"]} == {"/v1/chat/completions", "Aggregated"}
            assert [s["num_requests"] for s in stats["stats"] if s["name"] == "Aggregated"] == [len(requests)]
            report_page = urllib.request.urlopen(f"{web}/stats/report", timeout=10).read().decode()
            assert "/v1/chat/completions" in report_page
        finally:
            proc.send_signal(signal.SIGINT)  # locust writes --html when interrupted, as when it quits
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    report = out / "kv_report.html"
    assert report.exists() and "/v1/chat/completions" in (out / "locust.html").read_text()
    assert f'data-points="{len(requests)}"' in chromium(tmp_path, report.as_uri())
    shot = tmp_path / "kv-report.png"
    chromium(tmp_path, report.as_uri(), shot)
    assert line_pixels(shot) > 200
    with open(out / "locust_stats.csv") as f:
        names = {row["Name"] for row in csv.DictReader(f)}
    assert names == {"/v1/chat/completions", "Aggregated"}, "only real requests are locust requests"
    docs = os.environ.get("CHAINFS_SCREENSHOT_DIR")  # set by whoever refreshes docs/ pictures
    if docs:
        for name in ("kv-cache.png", "locust-tab.png", "kv-report.png"):
            shutil.copy(tmp_path / name, Path(docs) / f"loadtest-{name}")
