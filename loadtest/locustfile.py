"""locust: drive chainfs engines with a workload and record cache hits and TTFT.

    locust -f loadtest/locustfile.py --headless -u 4 -r 4 --host http://127.0.0.1:8000 \
        --workload requests.jsonl [--engines URL,URL] [--routing round_robin|sticky] [--out DIR]

A user takes whole sessions from the workload (sessions of a distributed run are split across
workers by `--chainfs-workers`) and sends their turns in order, each no earlier than its arrival
time. Hit tokens, miss tokens and TTFT are fired as custom locust statistics (request types `KV` and
`TTFT`), and every request's row travels to the master with the worker reports, so totals are exact
in distributed mode. The run quits itself once every request has been answered; the master (or the
single process) writes `summary.json` and `requests.csv` into `--out`.
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

from chainfs.loadtest.stats import Tally, error_row, row_from_response, write_csv
from chainfs.loadtest.workload import Session, group_sessions, load

log = logging.getLogger("chainfs.loadtest")

STATE: dict[str, Any] = {"queue": deque(), "total": 0, "t0": None, "tally": Tally(), "engines": [], "worker": 0}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--workload", env_var="CHAINFS_WORKLOAD", default="", help="workload JSONL")
    parser.add_argument("--engines", env_var="CHAINFS_ENGINES", default="",
                        help="comma-separated engine base URLs (default: --host)")
    parser.add_argument("--routing", env_var="CHAINFS_ROUTING", default="round_robin",
                        choices=["round_robin", "sticky"], help="request -> engine assignment")
    parser.add_argument("--out", env_var="CHAINFS_LOADTEST_OUT", default="", help="directory for results")
    parser.add_argument("--chainfs-workers", env_var="CHAINFS_WORKERS", type=int, default=1,
                        help="number of workers a distributed run splits sessions over")


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
    while STATE["tally"].completed < STATE["total"]:
        gevent.sleep(0.2)
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
        pick = req.index if self.environment.parsed_options.routing == "round_robin" else req.session
        engine = engines[pick % len(engines)]
        sent = time.monotonic()
        payload = {"prompt": req.prompt, "max_tokens": req.max_tokens, "temperature": 0}
        with self.client.post(f"{engine}/v1/completions", json=payload, name="/v1/completions",
                              catch_response=True, timeout=600) as resp:
            latency_ms = (time.monotonic() - sent) * 1000
            try:
                resp.raise_for_status()
                body = resp.json()
                row = row_from_response(req.index, req.session, req.turn, engine, sent - STATE["t0"],
                                        latency_ms, body)
            except Exception as exc:  # noqa: BLE001 - any failure is one error row
                resp.failure(str(exc))
                row = error_row(req.index, req.session, req.turn, engine, sent - STATE["t0"], latency_ms,
                                req.prompt_tokens, f"{type(exc).__name__}: {exc}")
                row["worker"] = STATE["worker"]
                STATE["tally"].add(row)
                return
            resp.success()
        row["worker"] = STATE["worker"]
        fire = self.environment.events.request.fire
        fire(request_type="TTFT", name="ttft_ms", response_time=row["ttft_ms"], response_length=0,
             exception=None, context={})
        fire(request_type="KV", name="hit_tokens", response_time=0, response_length=row["hit_tokens"],
             exception=None, context={})
        fire(request_type="KV", name="miss_tokens", response_time=0, response_length=row["miss_tokens"],
             exception=None, context={})
        STATE["tally"].add(row)
