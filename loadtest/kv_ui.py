"""The load test's KV-cache view: a tab in locust's web UI, a live hit-rate chart, an HTML report.

- Tab "KV cache" in locust's UI (locust's extended tabs): requests, prompt tokens, cached tokens,
  token hit rate, client-side TTFT p50, per engine and in total.
- `/kv-cache`: a page with the token hit rate over the run (cumulative line, one dot per request)
  and cached tokens, redrawn every 2 s from `/kv-cache/data`.
- `write_report(rows, path)`: the same page with the data inside, one self-contained HTML file.

The page draws SVG with a few lines of inline JavaScript: no external scripts, so it renders
offline and in a headless browser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

TAB_KEY = "kv-cache"
_TABLE = [{"key": "engine", "title": "Engine"}, {"key": "requests", "title": "Requests"},
          {"key": "prompt_tokens", "title": "Prompt tokens"}, {"key": "cached_tokens", "title": "Cached tokens"},
          {"key": "hit_rate", "title": "Token hit rate"}, {"key": "client_ttft_p50_ms", "title": "TTFT p50 (ms)"}]


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per engine and a total row, as the tab shows them."""
    def line(name: str, rs: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = sum(r["prompt_tokens"] for r in rs)
        hit = sum(r["hit_tokens"] for r in rs if r["ok"])
        ttft = [r.get("client_ttft_ms") or r["ttft_ms"] for r in rs if r["ok"]]
        return {"engine": name, "requests": len(rs), "prompt_tokens": prompt, "cached_tokens": hit,
                "hit_rate": f"{hit / prompt:.1%}" if prompt else "-",
                "client_ttft_p50_ms": round(float(np.percentile(ttft, 50)), 1) if ttft else "-"}

    engines = sorted({r["engine"] for r in rows})
    return [line(e, [r for r in rows if r["engine"] == e]) for e in engines] + [line("total", rows)]


def series(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The chart's data: requests in the order they finished, with the running token hit rate."""
    done = sorted(rows, key=lambda r: r["sent_s"] + r["latency_ms"] / 1000)
    points, prompt, hit = [], 0, 0
    for r in done:
        prompt += r["prompt_tokens"]
        hit += r["hit_tokens"] if r["ok"] else 0
        points.append({"t": round(r["sent_s"] + r["latency_ms"] / 1000, 3),
                       "rate": r["hit_tokens"] / r["prompt_tokens"] if r["ok"] and r["prompt_tokens"] else 0.0,
                       "cumulative": hit / prompt if prompt else 0.0, "cached": hit})
    return {"points": points, "requests": len(rows), "prompt_tokens": prompt, "cached_tokens": hit,
            "hit_rate": hit / prompt if prompt else 0.0, "errors": sum(1 for r in rows if not r["ok"]),
            "summary": summary(rows)}


def install(web_ui: Any, rows: Callable[[], list[dict[str, Any]]]) -> None:
    """Adds the tab and the chart page to locust's web UI (a Flask app)."""
    from flask import Response, request

    web_ui.template_args["extendedTabs"] = [{"title": "KV cache", "key": TAB_KEY}]
    web_ui.template_args["extendedTables"] = [{"key": TAB_KEY, "structure": _TABLE}]
    web_ui.template_args["extendedCsvFiles"] = [{"href": "/kv-cache", "title": "KV cache hit-rate chart"}]

    @web_ui.app.after_request
    def _extend(response: Any) -> Any:
        if request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": TAB_KEY, "data": summary(rows())}]
            response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/kv-cache")
    def _page() -> Any:
        return Response(page(None), content_type="text/html")

    @web_ui.app.route("/kv-cache/data")
    def _data() -> Any:
        return Response(json.dumps(series(rows())), content_type="application/json")


def write_report(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(page(series(rows)))
    return path


def page(data: dict[str, Any] | None) -> str:
    """The chart page: live (data None: polls /kv-cache/data) or a report with `data` inside."""
    embedded = "null" if data is None else json.dumps(data).replace("</", "<\\/")
    return _PAGE.replace("__DATA__", embedded)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>chainfs load test: KV cache</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } table { border-collapse: collapse; margin-top: 16px; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; } .axis { stroke: #888; } .grid { stroke: #eee; }
#hit-rate-line { fill: none; stroke: #1f77b4; stroke-width: 2.5; } .dot { fill: #ff7f0e; opacity: .6; }
#cached-line { fill: none; stroke: #2ca02c; stroke-width: 1.5; stroke-dasharray: 4 3; }
</style></head>
<body>
<h1>KV cache: token hit rate over the run</h1>
<div id="summary">waiting for requests...</div>
<svg id="chart" width="900" height="360" viewBox="0 0 900 360"></svg>
<div><span style="color:#1f77b4">&#9632;</span> cumulative token hit rate (left axis)
&nbsp; <span style="color:#ff7f0e">&#9679;</span> hit rate of each request
&nbsp; <span style="color:#2ca02c">&#9632;</span> cached tokens so far (right axis)</div>
<table id="engines"></table>
<script>
const EMBEDDED = __DATA__;
const W = 900, H = 360, L = 60, R = 80, T = 16, B = 40;
function el(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function draw(d) {
  const svg = document.getElementById("chart");
  svg.innerHTML = "";
  const pts = d.points, n = pts.length;
  const tmax = n ? Math.max(pts[n - 1].t, 1e-3) : 1, cmax = Math.max(d.cached_tokens, 1);
  const x = t => L + (W - L - R) * t / tmax, y = r => T + (H - T - B) * (1 - r);
  const yc = c => T + (H - T - B) * (1 - c / cmax);
  for (let i = 0; i <= 4; i++) {
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: y(i / 4), y2: y(i / 4), class: "grid"}));
    svg.appendChild(el("text", {x: L - 8, y: y(i / 4) + 4, "text-anchor": "end", "font-size": 12}, (25 * i) + "%"));
    svg.appendChild(el("text", {x: W - R + 8, y: y(i / 4) + 4, "font-size": 12}, Math.round(cmax * i / 4)));
  }
  svg.appendChild(el("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}));
  svg.appendChild(el("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis"}));
  svg.appendChild(el("text", {x: (W - R + L) / 2, y: H - 8, "text-anchor": "middle", "font-size": 12},
                      "seconds since start (" + tmax.toFixed(1) + " s)"));
  for (const p of pts) svg.appendChild(el("circle", {cx: x(p.t), cy: y(p.rate), r: 3, class: "dot"}));
  svg.appendChild(el("polyline", {id: "cached-line", points: pts.map(p => x(p.t) + "," + yc(p.cached)).join(" ")}));
  svg.appendChild(el("polyline", {id: "hit-rate-line", "data-points": n,
                                   points: pts.map(p => x(p.t) + "," + y(p.cumulative)).join(" ")}));
  document.getElementById("summary").innerHTML =
    "<b>" + d.requests + "</b> requests, <b>" + d.prompt_tokens + "</b> prompt tokens, <b>" +
    d.cached_tokens + "</b> cached tokens: token hit rate <b id='hit-rate'>" +
    (100 * d.hit_rate).toFixed(1) + "%</b>" + (d.errors ? ", <b>" + d.errors + " errors</b>" : "");
  const rows = d.summary.map(s => "<tr><td>" + [s.engine, s.requests, s.prompt_tokens, s.cached_tokens,
    s.hit_rate, s.client_ttft_p50_ms].join("</td><td>") + "</td></tr>").join("");
  document.getElementById("engines").innerHTML = "<tr><th>engine</th><th>requests</th><th>prompt tokens</th>" +
    "<th>cached tokens</th><th>token hit rate</th><th>TTFT p50 ms</th></tr>" + rows;
}
if (EMBEDDED) { draw(EMBEDDED); } else {
  const poll = () => fetch("/kv-cache/data").then(r => r.json()).then(draw).catch(() => {});
  poll(); setInterval(poll, 2000);
}
</script></body></html>
"""
