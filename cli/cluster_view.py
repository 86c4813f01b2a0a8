"""The facts `chainfs cluster status` and `chainfs top` show: routing joined with the servers' metrics.

Nodes and chains come from the metaserver's routing table; capacity, chunk counts, fencing and
resync from each storage node's /metrics (its address is in the routing table), and throughput
from two scrapes `interval` seconds apart.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from chainfs.common.scrape import Samples, scrape_all
from chainfs.proto import meta_pb2 as mpb


def state_name(state: int) -> str:
    return mpb.TargetState.Name(state).lower()


def scrape_nodes(table: mpb.RoutingTable, timeout: float = 2.0) -> dict[int, Samples | None]:
    found = scrape_all({str(n.node_id): n.metrics_address for n in table.nodes if n.metrics_address}, timeout)
    return {n.node_id: found.get(str(n.node_id)) for n in table.nodes}


def _rate(now: Samples | None, before: Samples | None, interval: float, target: str, op: str) -> float | None:
    if now is None or before is None or interval <= 0:
        return None
    name = "chainfs_storage_bytes_total"
    delta = now.get_one(name, target=target, op=op) - before.get_one(name, target=target, op=op)
    return max(0.0, delta) / interval


def facts(table: mpb.RoutingTable, now: dict[int, Samples | None],
          before: dict[int, Samples | None] | None = None, interval: float = 0.0) -> dict[str, Any]:
    """Everything shown, as plain data (what `--json` prints)."""
    before = before or {}
    member: dict[int, tuple[int, int]] = {}  # target -> (chain, state)
    for c in table.chains:
        for t in c.targets:
            member[t.target_id] = (c.chain_id, t.state)
    nodes, problems = [], []
    for n in table.nodes:
        s, b = now.get(n.node_id), before.get(n.node_id)
        targets = []
        tids = sorted({int(t) for t in (s.by("chainfs_target_chunks", "target") if s else {})} |
                      {t.target_id for c in table.chains for t in c.targets if t.node_id == n.node_id})
        for tid in tids:
            chain, state = member.get(tid, (0, 0))
            t = str(tid)
            row = {"target_id": tid, "chain_id": chain, "state": state_name(state) if chain else "unchained"}
            if s is not None:
                row.update(chunks=int(s.get_one("chainfs_target_chunks", target=t)),
                           used_bytes=int(s.get_one("chainfs_target_used_bytes", target=t)),
                           free_bytes=int(s.get_one("chainfs_target_disk_free_bytes", target=t)),
                           disk_bytes=int(s.get_one("chainfs_target_disk_total_bytes", target=t)),
                           bytes_read=int(s.get_one("chainfs_storage_bytes_total", target=t, op="read")),
                           bytes_written=int(s.get_one("chainfs_storage_bytes_total", target=t, op="write")),
                           read_bps=_rate(s, b, interval, t, "read"), write_bps=_rate(s, b, interval, t, "write"))
            targets.append(row)
            if chain and state != mpb.SERVING:
                problems.append(f"target {tid} (node {n.node_id}, chain {chain}) is {row['state']}")
        node: dict[str, Any] = {"node_id": n.node_id, "address": n.address, "alive": n.alive,
                                "metrics_address": n.metrics_address, "metrics": s is not None, "targets": targets}
        if s is not None:
            node.update(fenced=bool(s.get_one("chainfs_storage_fenced")),
                        resync_jobs=int(s.get_one("chainfs_resync_jobs_running")),
                        resync_chunks_sent=int(s.get_one("chainfs_resync_chunks_sent_total")),
                        chunks=sum(t["chunks"] for t in targets), used_bytes=sum(t["used_bytes"] for t in targets),
                        free_bytes=max((t["free_bytes"] for t in targets), default=0),
                        read_bps=_sum(t["read_bps"] for t in targets), write_bps=_sum(t["write_bps"] for t in targets))
            if node["fenced"]:
                problems.append(f"node {n.node_id} is fenced (its lease ran out)")
        if not n.alive:
            problems.append(f"node {n.node_id} ({n.address}) is not alive")
        nodes.append(node)
    chains = [{"chain_id": c.chain_id, "version": c.version,
               "targets": [{"target_id": t.target_id, "node_id": t.node_id, "state": state_name(t.state)}
                           for t in c.targets]} for c in table.chains]
    return {"routing_version": table.version, "nodes": nodes, "chains": chains,
            "healthy": not problems, "problems": problems}


def _sum(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def rate(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}MB/s"


def node_table(f: dict[str, Any], title: str) -> Table:
    t = Table(title=title)
    for col in ("node", "address", "alive", "metrics", "chunks", "used", "free", "read", "write", "resync"):
        t.add_column(col, justify="right" if col in ("chunks", "used", "free", "read", "write") else "left",
                     no_wrap=True)
    for n in f["nodes"]:
        alive = "yes" if n["alive"] else "[red]NO[/]"
        if n.get("fenced"):
            alive += " [red](fenced)[/]"
        resync = f"{n['resync_jobs']} jobs/{n['resync_chunks_sent']} sent" if n["metrics"] else "-"
        t.add_row(str(n["node_id"]), n["address"], alive, ":" + n["metrics_address"].rpartition(":")[2]
                  if n["metrics_address"] else "-",
                  str(n.get("chunks", "-")), size(n.get("used_bytes")), size(n.get("free_bytes")),
                  rate(n.get("read_bps")), rate(n.get("write_bps")), resync)
    return t


def target_table(f: dict[str, Any]) -> Table:
    t = Table(title="targets")
    for col in ("target", "node", "chain", "state", "chunks", "used", "free", "read", "write"):
        t.add_column(col)
    for n in f["nodes"]:
        for tg in n["targets"]:
            state = tg["state"] if tg["state"] == "serving" else f"[red]{tg['state']}[/]"
            t.add_row(str(tg["target_id"]), str(n["node_id"]), str(tg["chain_id"] or "-"), state,
                      str(tg.get("chunks", "-")), size(tg.get("used_bytes")), size(tg.get("free_bytes")),
                      rate(tg.get("read_bps")), rate(tg.get("write_bps")))
    return t


def chain_table(f: dict[str, Any]) -> Table:
    t = Table(title="chains (head first)")
    for col in ("chain", "version", "targets (target@node: state)"):
        t.add_column(col)
    for c in f["chains"]:
        t.add_row(str(c["chain_id"]), str(c["version"]),
                  ", ".join(f"{m['target_id']}@{m['node_id']}: {m['state']}" for m in c["targets"]))
    return t
