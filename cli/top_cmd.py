"""`chainfs top chainfs://HOST:PORT`: a live view of a cluster and the engines that use it.

Every `--interval` seconds it reads the routing table from the metaserver, scrapes every storage
node's /metrics (addresses from the routing table) and every engine's (those announced under
/.chainfs/engines, see `engine/registry.py`, plus `--engine URL`), and redraws: per node
throughput, capacity and resync; chains and the state of each member; per engine requests
running and waiting, token hit rate (over the run and over the last interval) and TTFT.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chainfs.cli import cluster_view
from chainfs.common.scrape import Samples, scrape_all


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("top", help="live view: node throughput, chains, resync, engines' KV hit rate",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("url", help="the cluster: chainfs://HOST:PORT")
    top.add_argument("--engine", action="append", default=[], metavar="URL",
                     help="an engine's base URL to watch besides the announced ones (repeatable)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default %(default)s)")
    top.add_argument("--once", action="store_true", help="print one view (two scrapes an interval apart) and exit")
    top.add_argument("--iterations", type=int, default=0, help="stop after this many refreshes (0: until Ctrl-C)")
    top.set_defaults(func=cmd_top)


class Watch:
    """The previous scrape of everything, so each view can show rates over the last interval."""

    def __init__(self, url: str, engines: list[str]) -> None:
        from chainfs.client.rpc.meta_client import MetaClient
        from chainfs.client.url import parse_url

        self.url = url
        self.address = parse_url(url).address
        self.meta = MetaClient(self.address, timeout=2.0, retry_deadline=0)
        self.extra = [e.rstrip("/") for e in engines]
        self.before: dict[int, Samples | None] = {}
        self.engines_before: dict[str, Samples | None] = {}
        self.at = 0.0

    def engine_urls(self) -> dict[str, str]:
        from chainfs.engine.registry import engines

        try:
            found = {e["url"]: e.get("model", "") for e in engines(self.address)}
        except (OSError, ValueError):
            found = {}
        return {**found, **{u: found.get(u, "") for u in self.extra}}

    def view(self) -> Group:
        now = time.monotonic()
        interval = now - self.at if self.at else 0.0
        table = self.meta.routing(0).routing
        nodes = cluster_view.scrape_nodes(table)
        f = cluster_view.facts(table, nodes, self.before, interval)
        urls = self.engine_urls()
        scraped = scrape_all({u: u for u in urls})
        engines = [engine_row(u, urls[u], scraped.get(u), self.engines_before.get(u)) for u in sorted(urls)]
        self.before, self.engines_before, self.at = nodes, scraped, now
        head = Text.assemble((f"chainfs top  {self.url}", "bold"), f"   routing v{f['routing_version']}   ",
                             ("healthy" if f["healthy"] else "degraded: " + "; ".join(f["problems"][:3]),
                              "green" if f["healthy"] else "red"), f"   {time.strftime('%H:%M:%S')}")
        return Group(head, cluster_view.node_table(f, "nodes"), cluster_view.chain_table(f), engine_table(engines))


def engine_row(url: str, model: str, s: Samples | None, before: Samples | None) -> dict[str, Any]:
    if s is None:
        return {"url": url, "model": model, "up": False}
    q, h = s.total("vllm:prefix_cache_queries_total"), s.total("vllm:prefix_cache_hits_total")
    row: dict[str, Any] = {"url": url, "model": model or ",".join(sorted(_models(s))), "up": True,
                           "running": s.total("vllm:num_requests_running"),
                           "waiting": s.total("vllm:num_requests_waiting"),
                           "requests": s.total("vllm:request_success_total"),
                           "hit_rate": h / q if q else None, "recent_hit_rate": None, "ttft_ms": None}
    if before is not None:
        dq = q - before.total("vllm:prefix_cache_queries_total")
        dh = h - before.total("vllm:prefix_cache_hits_total")
        row["recent_hit_rate"] = dh / dq if dq > 0 else None
        n = s.total("vllm:time_to_first_token_seconds_count") - before.total("vllm:time_to_first_token_seconds_count")
        t = s.total("vllm:time_to_first_token_seconds_sum") - before.total("vllm:time_to_first_token_seconds_sum")
        row["ttft_ms"] = 1000 * t / n if n > 0 else None
    return row


def _models(s: Samples) -> set[str]:
    return {labels.get("model_name", "") for labels, _ in s.series("vllm:prompt_tokens_total")}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def engine_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="engines (announced under /.chainfs/engines, or --engine)")
    for col in ("engine", "model", "running", "waiting", "requests", "KV hit rate", "last interval", "TTFT ms"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        if not r["up"]:
            t.add_row(r["url"], r["model"], "[red]down[/]", "", "", "", "", "")
            continue
        t.add_row(r["url"], r["model"], f"{r['running']:.0f}", f"{r['waiting']:.0f}", f"{r['requests']:.0f}",
                  _pct(r["hit_rate"]), _pct(r["recent_hit_rate"]),
                  "-" if r["ttft_ms"] is None else f"{r['ttft_ms']:.1f}")
    if not rows:
        t.add_row("(none)", "", "", "", "", "", "", "")
    return t


def cmd_top(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise ValueError("--interval must be positive")
    watch = Watch(args.url, args.engine)
    console = Console()
    if args.once:
        watch.view()
        time.sleep(args.interval)  # the window of the rates shown, not a synchronization
        console.print(watch.view())
        return 0
    count = 0
    with Live(watch.view(), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while not args.iterations or count < args.iterations:
                time.sleep(args.interval)  # the refresh period
                live.update(watch.view())
                count += 1
        except KeyboardInterrupt:
            pass
    return 0
