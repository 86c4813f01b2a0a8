"""fsck: namespace invariants and replica comparison, chain by chain (issue 3, item 5).

The metaserver checks its own tables (CheckNamespace: every dentry points to an inode, no orphan
inodes, layouts sane) and lists the linked files and the unlinked inodes whose chunks may still
exist. Here we list every replica of every chain (ListChunks) and check:

* replicas agree: the same chunks with the same committed (version, length, CRC32C);
* every chunk belongs to a linked file (or to an open session / pending GC), lives on the chain the
  file's layout puts it on, and lies within the file's length;
* every file has all its chunks, however recently it was written: chunk i of a file of length L
  exists on its chain for every i < ceil(L / chunk size), full except the last, which ends exactly at
  L ("sizes match chunks"). A writer writes every chunk (zeros too), so a missing one is lost data,
  not a hole. Only a file that an open APPEND session is growing is skipped (its length is not final);
* every target of every chain is SERVING (a replica that is not cannot be compared);
* every replica can serve every chunk it lists: the chunk's last byte is read from each replica (one
  batched Read per replica), so a chunk file deleted or truncated behind the metadata's back is
  named. A chunk no replica can serve counts as missing from its file. (This probes presence only;
  rot inside a chunk is what reading and verifying the whole chunk finds.)

Run it at a quiet moment: chunks written while it lists may show up as transient differences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc

from chainfs.client.meta_client import MetaClient, RoutingCache
from chainfs.client.placement import chain_of
from chainfs.client.storage_client import CHANNELS, StorageClient
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (inode, index)
PROBE_BATCH = 512  # chunks per probing Read call


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
    paths = dict(zip((f.id for f in ns.files), ns.file_paths))
    pending = set(ns.pending_inodes)
    appending = set(ns.appending_inodes)
    report.files = len(files)
    routing = RoutingCache(meta)
    table = routing.refresh()
    storage = StorageClient(routing, retry_deadline=timeout, timeout=timeout)
    held: dict[Key, tuple[int, int]] = {}  # chunk -> (chain id, committed length) as listed
    listed: set[int] = set()  # chains of which at least one replica could be listed
    for chain in table.chains:
        report.chains += 1
        replicas = _list_replicas(storage, chain, report)
        if replicas:
            listed.add(chain.chain_id)
        keys = sorted(set().union(*(chunks.keys() for _, chunks in replicas))) if replicas else []
        report.chunks += len(keys)
        unreadable = {target.target_id: _probe(storage, chain, target, chunks, timeout, report.problems)
                      for target, chunks in replicas}
        for key in keys:
            metas = [(t.target_id, chunks.get(key)) for t, chunks in replicas]
            if len({_sig(m) for _, m in metas}) > 1:
                shown = "; ".join(f"target {tid}: {_sig(m)}" for tid, m in metas)
                report.problems.append(f"chain {chain.chain_id} chunk {key[0]}:{key[1]}: replicas differ: {shown}")
            some = next(m for _, m in metas if m is not None)
            if any(m is not None and key not in unreadable[tid] for tid, m in metas):
                held[key] = (chain.chain_id, some.length)
            _check_chunk(chain.chain_id, key, some, files, pending | appending, report.problems)
    for inode_id, inode in sorted(files.items()):
        if inode_id not in appending:
            _check_file_chunks(inode, paths.get(inode_id, f"inode {inode_id}"), held, listed, report.problems)
    return report


def _check_file_chunks(inode: mpb.Inode, path: str, held: dict[Key, tuple[int, int]], listed: set[int],
                       problems: list[str]) -> None:
    """Every chunk of a file is on its chain with the length the file's size implies."""
    size = inode.layout.chunk_size
    if not inode.length or size <= 0 or not inode.layout.chains:
        return  # a bad layout is reported by the metaserver's check
    count = -(-inode.length // size)
    missing: list[int] = []
    for index in range(count):
        chain_id = chain_of(inode.layout, index)
        found = held.get((inode.id, index))
        if found is None or found[0] != chain_id:
            if chain_id in listed:  # a chain nobody could list is reported already
                missing.append(index)
            continue
        expected = size if index < count - 1 else inode.length - index * size
        if found[1] != expected:
            problems.append(f"file {path} (inode {inode.id}): chunk {index} holds {found[1]} bytes, "
                            f"its length says {expected}")
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        problems.append(f"file {path} (inode {inode.id}): {len(missing)} of {count} chunks missing "
                        f"on every replica (chunks {shown})")


def _list_replicas(storage: StorageClient, chain: mpb.ChainInfo,
                   report: FsckReport) -> list[tuple[mpb.TargetInfo, dict[Key, spb.ChunkMeta]]]:
    out: list[tuple[mpb.TargetInfo, dict[Key, spb.ChunkMeta]]] = []
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
        out.append((target, {(m.chunk.inode, m.chunk.index): m for m in metas}))
    return out


def _probe(storage: StorageClient, chain: mpb.ChainInfo, target: mpb.TargetInfo,
           chunks: dict[Key, spb.ChunkMeta], timeout: float, problems: list[str]) -> set[Key]:
    """Reads the last byte of every chunk one replica lists; returns (and reports) those it cannot
    serve. PENDING (an update in flight at a non-tail replica) is not a failure."""
    stub = spb_grpc.StorageStub(CHANNELS.get(storage.routing.node_address(target.node_id)))
    keys = sorted(chunks)
    bad: set[Key] = set()
    for start in range(0, len(keys), PROBE_BATCH):
        part = keys[start:start + PROBE_BATCH]
        items = [spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version,
                              chunk=spb.ChunkId(inode=k[0], index=k[1]),
                              offset=max(0, chunks[k].length - 1), length=min(1, chunks[k].length)) for k in part]
        try:
            headers = [r.header for r in stub.Read(spb.ReadRequest(items=items), timeout=timeout)
                       if r.HasField("header")]
        except grpc.RpcError as exc:
            problems.append(f"chain {chain.chain_id}: cannot read from target {target.target_id}: {exc.details()}")
            bad.update(part)
            continue
        answered = {h.item for h in headers}
        for h in headers:
            if h.status not in (spb.OK, spb.PENDING) and h.item < len(part):
                key = part[h.item]
                bad.add(key)
                problems.append(f"chain {chain.chain_id} chunk {key[0]}:{key[1]}: target {target.target_id} cannot "
                                f"serve it ({spb.ItemStatus.Name(h.status).lower()}: {h.message})")
        for i in sorted(set(range(len(part))) - answered):
            bad.add(part[i])
            problems.append(f"chain {chain.chain_id} chunk {part[i][0]}:{part[i][1]}: target {target.target_id} "
                            "did not answer its read")
    return bad


def _check_chunk(chain_id: int, key: Key, meta: spb.ChunkMeta, files: dict[int, mpb.Inode],
                 pending: set[int], problems: list[str]) -> None:
    """Checks one listed chunk against its file: owned, on the right chain, within the length."""
    inode_id, index = key
    inode = files.get(inode_id)
    if inode is None:
        if inode_id not in pending:
            problems.append(f"chain {chain_id} chunk {inode_id}:{index}: orphan (no file, no session, no GC record)")
        return
    layout = inode.layout
    if chain_of(layout, index) != chain_id:
        problems.append(f"chain {chain_id} chunk {inode_id}:{index}: belongs on chain {chain_of(layout, index)}")
    if inode_id in pending:
        return  # an append in progress: its length is not final
    end = index * layout.chunk_size + meta.length
    if meta.length > layout.chunk_size or end > inode.length:
        problems.append(f"chain {chain_id} chunk {inode_id}:{index}: ends at byte {end}, "
                        f"past the file's length {inode.length}")
