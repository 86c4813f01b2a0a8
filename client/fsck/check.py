"""fsck: namespace invariants and replica comparison, chain by chain.

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
  named. A chunk no replica can serve counts as missing from its file;
* with `verify_data`, every replica of every chunk is read whole instead (at a bounded rate), so
  the replica checks it against its stored CRCs and we check what arrives: rot anywhere in a chunk
  is named with its chain, target, node and chunk (`FsckReport.bad`), and `repair` asks the node
  holding each bad replica to repair it from a good one (RepairChunk).

Run it at a quiet moment: chunks written while it lists may show up as transient differences.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import grpc

from chainfs.client.rpc.meta_client import MetaClient, RoutingCache
from chainfs.client.rpc.placement import chain_of, chunk_count
from chainfs.client.rpc.storage_client import CHANNELS, StorageClient
from chainfs.common.checksum import crc32c
from chainfs.common.config import MiB
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (inode, index)
PROBE_BATCH = 512  # chunks per probing Read call
VERIFY_BATCH_BYTES = 32 * MiB  # chunk bytes per verifying Read call


@dataclass(frozen=True)
class BadReplica:
    """One replica's copy of one chunk that it cannot serve intact."""

    chain_id: int
    target_id: int
    node_id: int
    inode: int
    index: int
    why: str


class _Pace:
    """Keeps the bytes read under a rate (MiB/s; 0 = unbounded)."""

    def __init__(self, mib_s: float) -> None:
        self.rate = mib_s * MiB
        self.start = time.monotonic()
        self.spent = 0

    def take(self, nbytes: int) -> None:
        if self.rate <= 0:
            return
        self.spent += nbytes
        due = self.start + self.spent / self.rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    bad: list[BadReplica] = field(default_factory=list)
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


def fsck(address: str, timeout: float = 30.0, verify_data: bool = False, verify_mib_s: float = 64.0) -> FsckReport:
    """Checks the cluster (see the module docstring); `verify_data` reads every replica of every
    chunk whole, at most `verify_mib_s` MiB/s (0 = unbounded)."""
    meta = MetaClient(address, timeout=timeout, retry_deadline=timeout)
    pace = _Pace(verify_mib_s) if verify_data else None
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
        unreadable = {target.target_id: _probe(storage, chain, target, chunks, timeout, report, pace)
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
    count = chunk_count(inode.length, size)
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


def _batches(keys: list[Key], chunks: dict[Key, spb.ChunkMeta], whole: bool) -> list[list[Key]]:
    """Probing reads go PROBE_BATCH chunks a call; verifying reads about VERIFY_BATCH_BYTES."""
    if not whole:
        return [keys[at:at + PROBE_BATCH] for at in range(0, len(keys), PROBE_BATCH)]
    out: list[list[Key]] = [[]]
    size = 0
    for k in keys:
        if out[-1] and (size + chunks[k].length > VERIFY_BATCH_BYTES or len(out[-1]) >= PROBE_BATCH):
            out.append([])
            size = 0
        out[-1].append(k)
        size += chunks[k].length
    return out if out[0] else []


def _probe(storage: StorageClient, chain: mpb.ChainInfo, target: mpb.TargetInfo, chunks: dict[Key, spb.ChunkMeta],
           timeout: float, report: FsckReport, pace: _Pace | None) -> set[Key]:
    """Reads the last byte of every chunk one replica lists (with `pace`: every chunk whole,
    verified); returns (and reports) those it cannot serve. PENDING (an update in flight at a
    non-tail replica) is not a failure."""
    stub = spb_grpc.StorageStub(CHANNELS.get(storage.routing.node_address(target.node_id), storage.routing.token))
    bad: set[Key] = set()
    where = f"target {target.target_id} on node {target.node_id}"

    def fail(key: Key, why: str) -> None:
        bad.add(key)
        report.bad.append(BadReplica(chain.chain_id, target.target_id, target.node_id, key[0], key[1], why))
        report.problems.append(f"chain {chain.chain_id} chunk {key[0]}:{key[1]}: {where} cannot serve it ({why})")

    for part in _batches(sorted(chunks), chunks, pace is not None):
        items = [spb.ReadItem(chain_id=chain.chain_id, chain_version=chain.version,
                              chunk=spb.ChunkId(inode=k[0], index=k[1]),
                              offset=0 if pace else max(0, chunks[k].length - 1),
                              length=chunks[k].length if pace else min(1, chunks[k].length)) for k in part]
        if pace is not None:
            pace.take(sum(chunks[k].length for k in part))
        try:
            headers = _read_checked(stub, items, timeout)
        except grpc.RpcError as exc:
            report.problems.append(f"chain {chain.chain_id}: cannot read from target {target.target_id}: "
                                   f"{exc.details()}")
            bad.update(part)
            continue
        for h in headers.values():
            if h.status not in (spb.OK, spb.PENDING) and h.item < len(part):
                fail(part[h.item], f"{spb.ItemStatus.Name(h.status).lower()}: {h.message}")
        for i in sorted(set(range(len(part))) - set(headers)):
            fail(part[i], "no answer to its read")
    return bad


def _read_checked(stub: spb_grpc.StorageStub, items: list[spb.ReadItem], timeout: float
                  ) -> dict[int, spb.ReadItemHeader]:
    """One Read call; each item's header, marked CHECKSUM_MISMATCH when the bytes that arrived do
    not match the CRC32C the replica sent with them."""
    headers: dict[int, spb.ReadItemHeader] = {}
    current: spb.ReadItemHeader | None = None
    crc = 0

    def close() -> None:
        if current is not None and current.status == spb.OK and crc != current.data_crc:
            current.status, current.message = spb.CHECKSUM_MISMATCH, "bytes received do not match their CRC32C"

    for reply in stub.Read(spb.ReadRequest(items=items), timeout=timeout):
        if reply.HasField("header"):
            close()
            current, crc = reply.header, 0
            headers[current.item] = current
        else:
            crc = crc32c(reply.data, crc)
    close()
    return headers


def repair(address: str, bad: list[BadReplica], timeout: float = 30.0) -> list[tuple[BadReplica, str]]:
    """Asks the node holding each bad replica to repair it from a good replica of its chain;
    returns each one with its outcome ("repaired", "was good", or the error)."""
    meta = MetaClient(address, timeout=timeout, retry_deadline=timeout)
    routing = RoutingCache(meta)
    routing.refresh()
    out: list[tuple[BadReplica, str]] = []
    for b in bad:
        try:
            stub = spb_grpc.StorageStub(CHANNELS.get(routing.node_address(b.node_id), routing.token))
            reply = stub.RepairChunk(spb.RepairChunkRequest(chain_id=b.chain_id,
                                                            chunk=spb.ChunkId(inode=b.inode, index=b.index)),
                                     timeout=timeout)
            out.append((b, "repaired" if reply.repaired else "was good"))
        except (grpc.RpcError, OSError) as exc:
            details = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
            out.append((b, f"not repaired: {details}"))
    return out


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
