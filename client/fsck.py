"""fsck: namespace invariants and replica comparison, chain by chain (issue 3, item 5).

The metaserver checks its own tables (CheckNamespace: every dentry points to an inode, no orphan
inodes, layouts sane) and lists the linked files and the unlinked inodes whose chunks may still
exist. Here we list every replica of every chain (ListChunks) and check:

* replicas agree: the same chunks with the same committed (version, length, CRC32C);
* every chunk belongs to a linked file (or to an open session / pending GC), lives on the chain the
  file's layout puts it on, and lies within the file's length; the chunk holding a file's last byte
  ends exactly at the file's length ("sizes match chunks");
* every target of every chain is SERVING (a replica that is not cannot be compared).

Run it at a quiet moment: chunks written while it lists may show up as transient differences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc

from chainfs.client.meta_client import MetaClient, RoutingCache
from chainfs.client.placement import chain_of
from chainfs.client.storage_client import StorageClient
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (inode, index)


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    files: int = 0
    chains: int = 0
    chunks: int = 0
    replicas: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "clean" if self.ok else f"{len(self.problems)} problems"
        return (f"{self.files} files, {self.chains} chains, {self.replicas} replicas, "
                f"{self.chunks} chunks: {verdict}")


def _sig(meta: spb.ChunkMeta | None) -> str:
    return "missing" if meta is None else f"v{meta.version} len {meta.length} crc {meta.crc:08x}"


def fsck(address: str, timeout: float = 30.0) -> FsckReport:
    meta = MetaClient(address, timeout=timeout, retry_deadline=timeout)
    report = FsckReport()
    ns = meta.check_namespace()
    report.problems.extend(ns.problems)
    files = {f.id: f for f in ns.files}
    pending = set(ns.pending_inodes)
    report.files = len(files)
    routing = RoutingCache(meta)
    table = routing.refresh()
    storage = StorageClient(routing, retry_deadline=timeout, timeout=timeout)
    last_chunk_seen: set[int] = set()
    for chain in table.chains:
        report.chains += 1
        replicas = _list_replicas(storage, chain, report)
        keys = sorted(set().union(*(chunks.keys() for _, chunks in replicas))) if replicas else []
        report.chunks += len(keys)
        for key in keys:
            metas = [(tid, chunks.get(key)) for tid, chunks in replicas]
            if len({_sig(m) for _, m in metas}) > 1:
                shown = "; ".join(f"target {tid}: {_sig(m)}" for tid, m in metas)
                report.problems.append(f"chain {chain.chain_id} chunk {key[0]}:{key[1]}: replicas differ: {shown}")
            some = next(m for _, m in metas if m is not None)
            if _check_chunk(chain.chain_id, key, some, files, pending, report.problems):
                last_chunk_seen.add(key[0])
    for inode_id, inode in sorted(files.items()):
        if inode.length and inode_id not in last_chunk_seen and inode_id not in pending:
            report.problems.append(f"file inode {inode_id}: {inode.length} bytes but no chunk holds its last byte")
    return report


def _list_replicas(storage: StorageClient, chain: mpb.ChainInfo,
                   report: FsckReport) -> list[tuple[int, dict[Key, spb.ChunkMeta]]]:
    out: list[tuple[int, dict[Key, spb.ChunkMeta]]] = []
    for i, target in enumerate(chain.targets):
        if target.state != mpb.SERVING:
            state = mpb.TargetState.Name(target.state).lower()
            report.problems.append(f"chain {chain.chain_id}: target {target.target_id} is {state}, not compared")
            continue
        try:
            metas = storage.list_chunks(chain.chain_id, i)
        except (grpc.RpcError, OSError) as exc:
            report.problems.append(f"chain {chain.chain_id}: cannot list target {target.target_id}: {exc}")
            continue
        report.replicas += 1
        out.append((target.target_id, {(m.chunk.inode, m.chunk.index): m for m in metas}))
    return out


def _check_chunk(chain_id: int, key: Key, meta: spb.ChunkMeta, files: dict[int, mpb.Inode],
                 pending: set[int], problems: list[str]) -> bool:
    """Checks one chunk against its file; returns True when it holds the file's last byte."""
    inode_id, index = key
    inode = files.get(inode_id)
    if inode is None:
        if inode_id not in pending:
            problems.append(f"chain {chain_id} chunk {inode_id}:{index}: orphan (no file, no session, no GC record)")
        return False
    layout = inode.layout
    if chain_of(layout, index) != chain_id:
        problems.append(f"chain {chain_id} chunk {inode_id}:{index}: belongs on chain {chain_of(layout, index)}")
    if inode_id in pending:
        return False  # an append in progress: its length is not final
    start = index * layout.chunk_size
    end = start + meta.length
    if meta.length > layout.chunk_size or end > inode.length:
        problems.append(f"chain {chain_id} chunk {inode_id}:{index}: ends at byte {end}, "
                        f"past the file's length {inode.length}")
        return False
    if start < inode.length <= start + layout.chunk_size:
        if end != inode.length:
            problems.append(f"chain {chain_id} chunk {inode_id}:{index}: last chunk ends at byte {end}, "
                            f"file length is {inode.length}")
        return True
    return False
