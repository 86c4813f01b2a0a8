"""The metaserver's half of fsck: namespace invariants checked against its own tables.

Why on the server: "no orphan inodes" needs every inode, which no client RPC lists; one scan of
`Namespace.consistent_view()` sees a consistent snapshot. The storage half (chunks against file
sizes, replicas against each other) runs in the client (`chainfs.client.fsck.check`), with the lists returned here:
every linked file inode with its path, the unlinked inodes whose chunks may legitimately exist
(OPEN write sessions and pending garbage collection; a closed session's record, kept only to answer a
retried close, is neither: its inode is linked or has a GC record), and the linked files an open
APPEND session is growing (their length is not final yet).
"""

from __future__ import annotations

from collections import Counter

from chainfs.common import config
from chainfs.common.paths import MAX_DEPTH, join_parts
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.records import GcRecord, SessionRecord
from chainfs.metaserver.store import P_GC, P_SESSION, ROOT_ID
from chainfs.proto import meta_pb2 as pb


def check_namespace(ns: Namespace, known_chains: set[int] | None = None) -> pb.NamespaceCheckReply:
    reply = pb.NamespaceCheckReply()
    problems = reply.problems
    with ns.consistent_view() as view:
        inodes = {i.id: i for i in view.inodes()}
        dentries = list(view.dentries())
        sessions = [SessionRecord.from_bytes(raw) for raw in view.values(P_SESSION)]
        gc = [GcRecord.from_bytes(raw) for raw in view.values(P_GC)]
    root = inodes.get(ROOT_ID)
    if root is None or root.type != pb.DIRECTORY:
        problems.append(f"root inode {ROOT_ID} is missing or not a directory")
    links: Counter[int] = Counter()
    named: dict[int, tuple[int, str]] = {}  # child -> (parent, name), for paths
    for parent_id, name, child_id in dentries:
        named[child_id] = (parent_id, name)
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
                reply.file_paths.append(_path(inode_id, named))
    gc_ids = {record.inode_id for record in gc}
    for inode_id in sorted(gc_ids & {i for i in inodes if links[i]}):
        problems.append(f"inode {inode_id} is linked but queued for garbage collection")
    open_sessions = [s for s in sessions if not s.closed]
    appending = {s.inode.id for s in open_sessions if s.mode == pb.APPEND and links[s.inode.id]}
    pending = gc_ids | {s.inode.id for s in open_sessions if s.inode.id not in appending}
    reply.pending_inodes.extend(sorted(pending))
    reply.appending_inodes.extend(sorted(appending))
    return reply


def _path(inode_id: int, named: dict[int, tuple[int, str]]) -> str:
    """The path of a linked inode from the dentries (bounded: a broken parent chain shows as '?')."""
    parts: list[str] = []
    cur = inode_id
    for _ in range(MAX_DEPTH + 1):
        if cur == ROOT_ID:
            return join_parts(parts[::-1])
        if cur not in named:
            break
        cur, name = named[cur]
        parts.append(name)
    return "?/" + "/".join(reversed(parts))


def _check_file(inode: pb.Inode, known_chains: set[int] | None, problems: list[str]) -> None:
    size = inode.layout.chunk_size
    if not config.is_power_of_two(size):
        problems.append(f"file inode {inode.id}: chunk size {size} is not a power of two")
    if not inode.layout.chains:
        problems.append(f"file inode {inode.id}: layout has no chains")
    elif known_chains is not None:
        unknown = sorted(set(inode.layout.chains) - known_chains)
        if unknown:
            problems.append(f"file inode {inode.id}: layout names unknown chains {unknown}")
