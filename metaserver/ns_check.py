"""The metaserver's half of fsck: namespace invariants checked against its own tables.

Why on the server: "no orphan inodes" needs every inode, which no client RPC lists; one scan under
the namespace lock sees a consistent snapshot. The storage half (chunks against file sizes, replicas
against each other) runs in the client (`chainfs.client.fsck`), with the lists returned here:
every linked file inode, and the unlinked inodes whose chunks may legitimately exist (open write
sessions, pending garbage collection).
"""

from __future__ import annotations

from collections import Counter

from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.records import GcRecord, SessionRecord
from chainfs.metaserver.store import P_DENTRY, P_GC, P_INODE, P_SESSION, ROOT_ID
from chainfs.proto import meta_pb2 as pb


def check_namespace(ns: Namespace, known_chains: set[int] | None = None) -> pb.NamespaceCheckReply:
    reply = pb.NamespaceCheckReply()
    problems = reply.problems
    # A consistent snapshot: the lock keeps this metaserver's mutations out, and reading through one
    # txn reads every table at one revision on etcd (other metaservers may be writing).
    with ns._lock:
        snap = ns.store.txn()
        inodes = {i.id: i for i in (pb.Inode.FromString(raw) for _, raw in snap.scan(P_INODE))}
        dentries = [(int.from_bytes(key[1:9], "big"), key[9:].decode("utf-8", "replace"),
                     int.from_bytes(value, "big")) for key, value in snap.scan(P_DENTRY)]
        sessions = [SessionRecord.from_bytes(raw) for _, raw in snap.scan(P_SESSION)]
        gc = [GcRecord.from_bytes(raw) for _, raw in snap.scan(P_GC)]
    root = inodes.get(ROOT_ID)
    if root is None or root.type != pb.DIRECTORY:
        problems.append(f"root inode {ROOT_ID} is missing or not a directory")
    links: Counter[int] = Counter()
    for parent_id, name, child_id in dentries:
        parent = inodes.get(parent_id)
        if parent is None:
            problems.append(f"dentry {parent_id}/{name!r}: parent inode {parent_id} does not exist")
        elif parent.type != pb.DIRECTORY:
            problems.append(f"dentry {parent_id}/{name!r}: parent inode {parent_id} is not a directory")
        child = inodes.get(child_id)
        if child is None:
            problems.append(f"dentry {parent_id}/{name!r} points to missing inode {child_id}")
            continue
        links[child_id] += 1
        if child.type == pb.DIRECTORY and child.parent_id != parent_id:
            problems.append(f"directory inode {child_id} is linked under {parent_id} but names {child.parent_id} "
                            "as its parent")
    for inode_id, inode in sorted(inodes.items()):
        if inode_id == ROOT_ID:
            continue
        if links[inode_id] == 0:
            problems.append(f"orphan inode {inode_id} ({pb.InodeType.Name(inode.type).lower()}): no dentry links it")
        elif links[inode_id] > 1:
            problems.append(f"inode {inode_id} is linked {links[inode_id]} times")
        if inode.type == pb.FILE:
            _check_file(inode, known_chains, problems)
            if links[inode_id]:
                reply.files.append(inode)
    gc_ids = {record.inode_id for record in gc}
    for inode_id in sorted(gc_ids & {i for i in inodes if links[i]}):
        problems.append(f"inode {inode_id} is linked but queued for garbage collection")
    pending = gc_ids | {s.inode.id for s in sessions}
    reply.pending_inodes.extend(sorted(pending))
    return reply


def _check_file(inode: pb.Inode, known_chains: set[int] | None, problems: list[str]) -> None:
    size = inode.layout.chunk_size
    if size <= 0 or size & (size - 1):
        problems.append(f"file inode {inode.id}: chunk size {size} is not a power of two")
    if not inode.layout.chains:
        problems.append(f"file inode {inode.id}: layout has no chains")
    elif known_chains is not None:
        unknown = sorted(set(inode.layout.chains) - known_chains)
        if unknown:
            problems.append(f"file inode {inode.id}: layout names unknown chains {unknown}")
