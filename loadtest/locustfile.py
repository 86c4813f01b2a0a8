"""locust: drive chainfs engines with a workload through the streaming chat API, as clients do.

    chainfs loadtest locust --headless -u 4 -r 4 --host http://127.0.0.1:8000 \
        --workload requests.jsonl [--engines URL,URL] [--routing round_robin|sticky] [--out DIR]

(`chainfs loadtest locust` runs locust on this file; its `--help` lists the flags below too, which
plain `locust -f loadtest/locustfile.py --help` cannot, as locust prints help before it imports
a locustfile.) A user takes whole sessions from the workload (sessions of a distributed run are
split across workers by `--chainfs-workers`) and sends their turns in order, each no earlier than
its arrival time, as `POST /v1/chat/completions` with `stream: true` and
`stream_options.include_usage`. Only those calls are locust requests: the response time is the
whole stream, hits and cached tokens come from the usage chunk. Every request's row travels to the
master with the worker reports, so totals are exact in distributed mode. The web UI gets a "KV
cache" tab (totals) and a live hit-rate chart at /kv-cache; with `--out` the master (or the single
process) writes `summary.json`, `requests.csv` and `kv_report.html` (the same chart) at the end.
The run quits itself once every request has been answered.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from chainfs.loadtest import kv_ui
from chainfs.loadtest.stats import Tally, error_row, row_from_response, write_csv
from chainfs.loadtest.workload import Session, chat_messages, group_sessions, load

log = logging.getLogger("chainfs.loadtest")

STATE: dict[str, Any] = {"queue": deque(), "total": 0, "t0": None, "tally": Tally(), "engines": [], "worker": 0}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("chainfs", "the KV-cache load test (loadtest/locustfile.py)")
    group.add_argument("--workload", env_var="CHAINFS_WORKLOAD", default="",
                       help="workload JSONL (written by `chainfs loadtest run` as workload.jsonl)")
    group.add_argument("--engines", env_var="CHAINFS_ENGINES", default="",
                       help="comma-separated engine base URLs (default: --host)")
    group.add_argument("--routing", env_var="CHAINFS_ROUTING", default="round_robin",
                       choices=["round_robin", "sticky"],
                       help="request -> engine: round_robin by request, sticky by session")
    group.add_argument("--api", env_var="CHAINFS_API", default="chat", choices=["chat", "completions"],
                       help="chat: streaming chat of the prompt's text; completions: streaming "
                            "/v1/completions of its token ids (vLLM: keys its cache by exactly them)")
    group.add_argument("--model", env_var="CHAINFS_MODEL", default="",
                       help="the `model` field of each request (default: none, the engine's own)")
    group.add_argument("--out", env_var="CHAINFS_LOADTEST_OUT", default="",
                       help="directory for summary.json, requests.csv and kv_report.html")
    group.add_argument("--chainfs-workers", env_var="CHAINFS_WORKERS", type=int, default=1,
                       help="number of workers a distributed run splits sessions over")


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if environment.web_ui is not None:
        kv_ui.install(environment.web_ui, lambda: STATE["tally"].rows)


def _engines(environment: Any) -> list[str]:
    opts = environment.parsed_options
    listed = [e.strip().rstrip("/") for e in (opts.engines or "").split(",") if e.strip()]
    return listed or [(environment.host or "").rstrip("/")]


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    STATE["engines"] = _engines(environment)
    STATE["tally"] = Tally()
    if not opts.workload:
        raise SystemExit("--workload is required (a JSONL file from `chainfs loadtest` generators)")
    sessions = group_sessions(load(opts.workload))
    STATE["total"] = sum(len(s.requests) for s in sessions)
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        gevent.spawn(_quit_when_done, environment)
        return
    index, count = 0, 1
    if isinstance(runner, WorkerRunner):
        index, count = max(0, runner.worker_index), max(1, opts.chainfs_workers)
    STATE["queue"] = deque(s for i, s in enumerate(sessions) if i % count == index)
    STATE["worker"] = index
    STATE["t0"] = time.monotonic()
    if isinstance(runner, LocalRunner):
        gevent.spawn(_quit_when_done, environment)


def _quit_when_done(environment: Any) -> None:
    """Headless runs quit once every request is answered; with the web UI the run stops and the UI
    stays up with the results (locust's --autoquit decides when it goes)."""
    while STATE["tally"].completed < STATE["total"]:
        gevent.sleep(0.2)
    if environment.web_ui is not None:
        environment.runner.stop()
    else:
        environment.runner.quit()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        _write_results(environment)


@events.report_to_master.add_listener
def _ship(client_id: str, data: dict[str, Any]) -> None:
    data["chainfs"] = STATE["tally"].drain()


@events.worker_report.add_listener
def _collect(client_id: str, data: dict[str, Any]) -> None:
    STATE["tally"].merge(data.get("chainfs"))


def _write_results(environment: Any) -> None:
    out = environment.parsed_options.out
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    rows = STATE["tally"].rows
    write_csv(rows, Path(out) / "requests.csv")
    (Path(out) / "summary.json").write_text(json.dumps(STATE["tally"].totals(), indent=2))
    kv_ui.write_report(rows, Path(out) / "kv_report.html")


class EngineUser(HttpUser):
    """Sends whole sessions; waits between polls only when there is nothing left to send."""

    wait_time = between(0.05, 0.1)

    @task
    def run_session(self) -> None:
        try:
            session: Session = STATE["queue"].popleft()
        except IndexError:
            return
        for req in session.requests:
            delay = STATE["t0"] + req.arrival_s - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            self._send(req)

    def _send(self, req: Any) -> None:
        engines = STATE["engines"]
        opts = self.environment.parsed_options
        pick = req.index if opts.routing == "round_robin" else req.session
        engine = engines[pick % len(engines)]
        payload: dict[str, Any] = {"max_tokens": req.max_tokens, "temperature": 0, "stream": True,
                                   "stream_options": {"include_usage": True}}
        if opts.api == "completions":
            payload.update(prompt=req.prompt, ignore_eos=True)
            path = "/v1/completions"
        else:
            payload["messages"] = chat_messages(req.prompt)
            path = "/v1/chat/completions"
        if opts.model:
            payload["model"] = opts.model
        sent = time.monotonic()
        with self.client.post(f"{engine}{path}", json=payload, name=path,
                              catch_response=True, stream=True, timeout=600) as resp:
            try:
                resp.raise_for_status()
                body, first, size = _read_stream(resp)
                latency_ms = (time.monotonic() - sent) * 1000
                row = row_from_response(req.index, req.session, req.turn, engine, sent - STATE["t0"],
                                        latency_ms, body)
                row["client_ttft_ms"] = round(((first or time.monotonic()) - sent) * 1000, 3)
                if not (body.get("timings") or (body.get("usage") or {}).get("timings")):
                    row["ttft_ms"] = row["client_ttft_ms"]  # an engine that reports none (vLLM)
                resp.request_meta["response_length"] = size
            except Exception as exc:  # noqa: BLE001 - any failure is one error row
                latency_ms = (time.monotonic() - sent) * 1000
                resp.failure(f"{type(exc).__name__}: {exc}")
                row = error_row(req.index, req.session, req.turn, engine, sent - STATE["t0"], latency_ms,
                                req.prompt_tokens, f"{type(exc).__name__}: {exc}")
            else:
                resp.success()
            resp.request_meta["response_time"] = latency_ms  # the whole stream, not its first byte
        row["worker"] = STATE["worker"]
        STATE["tally"].add(row)


def _read_stream(resp: Any) -> tuple[dict[str, Any], float | None, int]:
    """Reads an SSE chat stream to `data: [DONE]`: (the usage chunk, when text first came, bytes)."""
    usage: dict[str, Any] | None = None
    first: float | None = None
    size = 0
    done = False
    for line in resp.iter_lines(decode_unicode=False):
        size += len(line) + 1
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            done = True
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(chunk["error"].get("message", "stream error"))
        if chunk.get("choices") and first is None:
            first = time.monotonic()
        if chunk.get("usage"):
            usage = chunk
    if not done or usage is None:
        raise RuntimeError("the stream ended without its usage chunk and [DONE]")
    return usage, first, size
