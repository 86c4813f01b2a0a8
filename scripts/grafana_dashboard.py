"""Writes docs/grafana-chainfs.json: a Grafana dashboard over the metrics chainfs servers and
engines export (see common/metrics.py, storageserver/metrics.py, metaserver/metrics.py,
engine/metrics.py). Run it after changing a panel; tests/integration/test_top.py checks that every
metric the dashboard names is served by a live cluster and engine.

    .venv/bin/python scripts/grafana_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "grafana-chainfs.json"

# (row title, [(panel title, unit, [(expr, legend)])])
ROWS = [
    ("Storage", [
        ("Bytes written per node", "Bps", [('sum by (instance) (rate(chainfs_storage_bytes_total{op="write"}[1m]))', "{{instance}}")]),
        ("Bytes read per node", "Bps", [('sum by (instance) (rate(chainfs_storage_bytes_total{op="read"}[1m]))', "{{instance}}")]),
        ("Chunk ops per target", "ops", [("sum by (target, op) (rate(chainfs_storage_ops_total[1m]))", "target {{target}} {{op}}")]),
        ("Chunk op latency p99", "s", [("histogram_quantile(0.99, sum by (le, op) (rate(chainfs_storage_op_seconds_bucket[5m])))", "{{op}}")]),
        ("Used bytes per target", "bytes", [("chainfs_target_used_bytes", "target {{target}}")]),
        ("Free bytes per target", "bytes", [("chainfs_target_disk_free_bytes", "target {{target}}")]),
        ("Chunks per target", "short", [("chainfs_target_chunks", "target {{target}}")]),
        ("Fenced nodes", "short", [("sum(chainfs_storage_fenced)", "fenced")]),
    ]),
    ("RPCs", [
        ("RPC latency p99 by method", "s", [("histogram_quantile(0.99, sum by (le, service, method) (rate(chainfs_rpc_duration_seconds_bucket[5m])))", "{{service}}/{{method}}")]),
        ("RPC rate by status", "reqps", [("sum by (method, code) (rate(chainfs_rpc_requests_total[1m]))", "{{method}} {{code}}")]),
        ("RPC errors by reason", "reqps", [("sum by (method, reason) (rate(chainfs_rpc_errors_total[5m]))", "{{method}} {{reason}}")]),
    ]),
    ("Cluster", [
        ("Chain members by state", "short", [("chainfs_cluster_targets", "{{state}}")]),
        ("Degraded chains", "short", [("chainfs_cluster_chains_degraded", "degraded")]),
        ("Storage nodes", "short", [("chainfs_cluster_nodes", "alive={{alive}}")]),
        ("Resync", "short", [("sum(chainfs_resync_jobs_running)", "jobs running"),
                             ("sum(rate(chainfs_resync_chunks_sent_total[1m]))", "chunks sent/s")]),
        ("Garbage collection", "short", [("chainfs_gc_pending_records", "records pending"),
                                         ("rate(chainfs_gc_collected_total[5m])", "inodes collected/s")]),
    ]),
    ("Engines (vLLM metric names)", [
        ("KV token hit rate", "percentunit", [("sum by (model_name) (rate(vllm:prefix_cache_hits_total[1m])) / "
                                               "sum by (model_name) (rate(vllm:prefix_cache_queries_total[1m]))", "{{model_name}}")]),
        ("Time to first token", "s", [("histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))", "p50"),
                                      ("histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))", "p99")]),
        ("Inter-token latency p99", "s", [("histogram_quantile(0.99, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[5m])))", "p99")]),
        ("End-to-end latency p99", "s", [("histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))", "p99")]),
        ("Requests running / waiting", "short", [("sum(vllm:num_requests_running)", "running"),
                                                 ("sum(vllm:num_requests_waiting)", "waiting")]),
        ("Tokens per second", "short", [("sum(rate(vllm:prompt_tokens_total[1m]))", "prompt"),
                                        ("sum(rate(vllm:generation_tokens_total[1m]))", "generation")]),
        ("Cached tokens per second by tier", "short", [("sum by (tier) (rate(chainfs_engine_prefix_cache_hits_total[1m]))", "{{tier}}")]),
    ]),
]


def dashboard() -> dict:
    panels, y, pid = [], 0, 1
    for title, row in ROWS:
        panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (ptitle, unit, targets) in enumerate(row):
            panels.append({
                "type": "timeseries", "title": ptitle, "id": pid,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": (i % 3) * 8, "y": y + (i // 3) * 8, "w": 8, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [{"expr": e, "legendFormat": legend, "refId": chr(65 + k)}
                            for k, (e, legend) in enumerate(targets)],
            })
            pid += 1
        y += ((len(row) + 2) // 3) * 8
    return {
        "title": "chainfs", "uid": "chainfs-overview", "schemaVersion": 39, "version": 1, "editable": True,
        "time": {"from": "now-30m", "to": "now"}, "refresh": "10s", "tags": ["chainfs", "vllm"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=1) + "\n")
    print(f"wrote {OUT}")
