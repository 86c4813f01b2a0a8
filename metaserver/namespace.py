"""The namespace: directories, files, rename and remove, each one atomic synced batch.

Why one lock: every mutation reads a little state (lookups, emptiness, counters) and then writes
one batch; serializing mutations makes read-check-write races impossible without RocksDB
transactions. Reads (stat, list) take no lock: each commit is atomic, so they see whole operations.
Several metaservers over etcd do not share the lock: there each commit validates what it read and a
lost race reruns the operation (`@retry_conflicts`), so every mutation must read through its txn.

Rooms: path walks and new inodes are `tree.py` (shared by every component below); write sessions
(open/renew/close, sweeping expired ones) are the `WriteSessions` component of `sessions.py`, and
SetAttr the `Attrs` component of `attrs.py`, each over the same store, tree and lock; this class
forwards their calls, so the servicer and the collector call one object. The garbage records that
sessions and `remove`/`rename` produce are listed by `gc_records()` for the collector, and
`consistent_view()` gives checks (`ns_check.py`) one reading of every table.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.paths import MAX_DEPTH, join_parts, split_path
from chainfs.metaserver import request_ids
from chainfs.metaserver.extent_check import ChunkExtentCheck
from chainfs.metaserver.layout import ChainSource, default_layout, merge_layout, validate_layout
from chainfs.metaserver.records import GcRecord
from chainfs.metaserver.attrs import Attrs
from chainfs.metaserver.sessions import WriteSessions
from chainfs.metaserver.store import C_INODE, P_GC, ROOT_ID, Reader, Store, Txn, gc_key, retry_conflicts
from chainfs.metaserver.tree import DIR_MODE, Tree
from chainfs.proto import meta_pb2 as pb

log = logging.getLogger(__name__)


class Namespace:
    """Namespace operations over a metadata Store. Every error is a ChainfsError naming the path."""

    def __init__(
        self,
        store: Store,
        chains: ChainSource | None = None,
        replication: int = config.DEFAULT_REPLICATION,
        lease_s: float = config.WRITE_SESSION_LEASE,
        clock_ns: Callable[[], int] = time.time_ns,
        extent_check: ChunkExtentCheck | None = None,
    ) -> None:
        self.store = store
        self.extent_check = extent_check
        self.chains = chains
        self.replication = replication
        self.lease_ns = int(lease_s * 1e9)
        self.request_ttl_ns = int(config.REQUEST_ID_TTL * 1e9)
        self.clock_ns = clock_ns
        self._lock = store.mutation_lock()
        self.tree = Tree(chains, clock_ns)
        self.write_sessions = WriteSessions(store, self.tree, self._lock, self.lease_ns, clock_ns, extent_check)
        self.attrs = Attrs(store, self.tree, self._lock, clock_ns)
        # Their calls, answered by the components (one copy of each signature and docstring).
        self.open_write = self.write_sessions.open_write
        self.open_write_many = self.write_sessions.open_write_many
        self.renew_session = self.write_sessions.renew_session
        self.close_write = self.write_sessions.close_write
        self.close_write_many = self.write_sessions.close_write_many
        self.sweep_expired_sessions = self.write_sessions.sweep_expired_sessions
        self.sessions = self.write_sessions.sessions
        self.set_attr = self.attrs.set_attr
        self._ensure_root()

    @contextmanager
    def consistent_view(self) -> Iterator[Reader]:
        """One consistent reading of every table, for checks: the lock keeps this metaserver's
        mutations out, and one txn reads every table at one revision on etcd (other metaservers
        may be writing)."""
        with self._lock:
            yield self.store.txn()

    # ---- helpers ----

    @retry_conflicts
    def _ensure_root(self) -> None:
        with self._lock:
            if self.store.get_inode(ROOT_ID) is not None:
                return
            now = self.clock_ns()
            root = pb.Inode(
                id=ROOT_ID,
                type=pb.DIRECTORY,
                layout=default_layout(self.replication),
                ctime_ns=now,
                mtime_ns=now,
                mode=DIR_MODE,
                parent_id=ROOT_ID,
            )
            txn = self.store.txn()
            txn.put_inode(root)
            txn.reserve(C_INODE, ROOT_ID)
            self.store.commit(txn)
            log.info("created the root directory (replication %d)", self.replication)

    # ---- operations ----

    @retry_conflicts
    def mkdir(self, path: str, parents: bool = False, layout: pb.Layout | None = None,
              request_id: str = "") -> pb.Inode:
        parts = split_path(path)
        where = join_parts(parts)
        with self._lock:
            txn = self.store.txn()
            first = request_ids.replay(txn, request_id, "mkdir")
            if first is not None:
                return pb.Inode.FromString(first)
            if not parts:
                if parents:
                    return self.tree.get(txn, ROOT_ID, where)
                raise ChainfsError(Reason.EXISTS, f"directory exists: {where}")
            parent = self.tree.parent_dir(txn, parts, where, parents)
            existing = txn.lookup(parent.id, parts[-1])
            if existing is not None:
                inode = self.tree.get(txn, existing, where)
                if inode.type == pb.DIRECTORY and parents:
                    return inode
                kind = "directory" if inode.type == pb.DIRECTORY else "file"
                raise ChainfsError(Reason.EXISTS, f"{kind} exists: {where}")
            inode = self.tree.new_dir(txn, parent, parts[-1], layout, where)
            request_ids.remember(txn, request_id, "mkdir", inode.SerializeToString(), inode.ctime_ns)
            self.store.commit(txn)
            return inode

    @retry_conflicts
    def create(
        self, path: str, exclusive: bool = False, parents: bool = False, layout: pb.Layout | None = None,
        request_id: str = "",
    ) -> pb.Inode:
        """An empty file; an existing file is returned unchanged unless `exclusive` (O_CREAT, no O_TRUNC)."""
        parts = split_path(path)
        where = join_parts(parts)
        if not parts:
            raise ChainfsError(Reason.IS_A_DIRECTORY, f"is a directory: {where}")
        with self._lock:
            txn = self.store.txn()
            first = request_ids.replay(txn, request_id, "create")
            if first is not None:
                return pb.Inode.FromString(first)
            parent = self.tree.parent_dir(txn, parts, where, parents)
            existing = txn.lookup(parent.id, parts[-1])
            if existing is not None:
                inode = self.tree.get(txn, existing, where)
                if inode.type == pb.DIRECTORY:
                    raise ChainfsError(Reason.IS_A_DIRECTORY, f"is a directory: {where}")
                if exclusive:
                    raise ChainfsError(Reason.EXISTS, f"file exists: {where}")
                return inode
            inode = self.tree.new_file(txn, parent, layout, where)
            txn.put_inode(inode)
            txn.link(parent.id, parts[-1], inode.id)
            self.tree.touch(txn, parent.id, inode.mtime_ns)
            request_ids.remember(txn, request_id, "create", inode.SerializeToString(), inode.ctime_ns)
            self.store.commit(txn)
            return inode

    def stat(self, path: str) -> pb.Inode:
        parts = split_path(path)
        cached = self.store.resolve(parts)  # etcd: one round trip when the path's dentries are cached
        if cached is not None:
            return cached
        return self.tree.walk(self.store.reader(), parts, join_parts(parts))

    def stat_many(self, paths: Sequence[str]) -> list[pb.Inode | ChainfsError]:
        """Each path's inode or the error a single stat would raise, in order.

        Why: a KV lookup probes dozens of block files that share their upper directories; one call
        walks each shared directory once (every directory met is remembered for the call) instead
        of one round trip and one full walk per path.
        """
        dirs: dict[tuple[str, ...], pb.Inode] = {}
        out: list[pb.Inode | ChainfsError] = []
        for path in paths:
            try:
                parts = split_path(path)
                where = join_parts(parts)
                if not path:
                    raise ChainfsError(Reason.INVALID_ARGUMENT, "path is required")
                if () not in dirs:
                    dirs[()] = self.tree.get(self.store, ROOT_ID, where)
                known = len(parts) - 1 if parts else 0
                while known > 0 and tuple(parts[:known]) not in dirs:
                    known -= 1
                cur = dirs[tuple(parts[:known])]
                for depth in range(known, len(parts)):
                    cur = self.tree.walk_from(self.store, cur, [parts[depth]], where)
                    if depth < len(parts) - 1 and cur.type == pb.DIRECTORY:
                        dirs[tuple(parts[:depth + 1])] = cur
                out.append(cur)
            except ChainfsError as exc:
                out.append(exc)
        return out

    def list(self, path: str, start_after: str = "", limit: int = 0) -> tuple[list[pb.DirEntry], bool]:
        """One page of a directory in name byte order, and whether more entries follow."""
        parts = split_path(path)
        reader = self.store.reader()
        directory = self.store.resolve(parts)  # etcd: one round trip when the dentries are cached
        if directory is None or directory.type != pb.DIRECTORY:
            directory = self.tree.walk_dir(reader, parts, join_parts(parts))
        limit = config.DEFAULT_LIST_LIMIT if limit <= 0 else min(limit, config.MAX_LIST_LIMIT)
        page: list[tuple[str, int]] = []
        more = False
        for name, child_id in reader.children(directory.id, start_after):
            if len(page) == limit:
                more = True
                break
            page.append((name, child_id))
        children = reader.get_inodes([child_id for _, child_id in page])  # one round trip on etcd
        # A child removed between the two reads is left out.
        return [pb.DirEntry(name=n, inode=c) for (n, _), c in zip(page, children) if c is not None], more

    @retry_conflicts
    def rename(self, src: str, dst: str, request_id: str = "") -> None:
        sp, dp = split_path(src), split_path(dst)
        s_where, d_where = join_parts(sp), join_parts(dp)
        if not sp:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"cannot rename the root: {s_where}")
        if not dp:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"cannot replace the root: {s_where} -> {d_where}")
        with self._lock:
            txn = self.store.txn()
            if request_ids.replay(txn, request_id, "rename") is not None:
                return
            s_parent = self.tree.walk_dir(txn, sp[:-1], s_where)
            src_id = txn.lookup(s_parent.id, sp[-1])
            if src_id is None:
                raise ChainfsError(Reason.NOT_FOUND, f"no such file or directory: {s_where}")
            if sp == dp:
                return
            d_parent = self.tree.walk_dir(txn, dp[:-1], d_where)
            moved = self.tree.get(txn, src_id, s_where)
            if moved.type == pb.DIRECTORY:
                self._refuse_own_subtree(txn, moved.id, d_parent, s_where, d_where)
            dst_id = txn.lookup(d_parent.id, dp[-1])
            if dst_id is not None:
                old = self.tree.get(txn, dst_id, d_where)
                if old.type == pb.DIRECTORY:
                    if moved.type != pb.DIRECTORY:
                        raise ChainfsError(Reason.IS_A_DIRECTORY, f"cannot replace a directory with a file: {d_where}")
                    if txn.has_children(old.id):
                        raise ChainfsError(Reason.NOT_EMPTY, f"directory not empty: {d_where}")
                elif moved.type == pb.DIRECTORY:
                    raise ChainfsError(Reason.NOT_A_DIRECTORY, f"cannot replace a file with a directory: {d_where}")
                else:
                    self.tree.gc(txn, old, f"replaced by rename of {s_where}")
                txn.delete_inode(old.id)
            now = self.clock_ns()
            txn.unlink(s_parent.id, sp[-1])
            txn.link(d_parent.id, dp[-1], moved.id)
            moved.parent_id = d_parent.id
            moved.ctime_ns = now
            txn.put_inode(moved)
            self.tree.touch(txn, s_parent.id, now)
            self.tree.touch(txn, d_parent.id, now)
            request_ids.remember(txn, request_id, "rename", b"", now)
            self.store.commit(txn)

    def _refuse_own_subtree(self, r: Reader, moved_id: int, d_parent: pb.Inode, s_where: str, d_where: str) -> None:
        """Walks parent ids from the destination's parent to the root; meeting `moved_id` is a cycle."""
        cur = d_parent
        for _ in range(MAX_DEPTH + 2):
            if cur.id == moved_id:
                raise ChainfsError(
                    Reason.INVALID_ARGUMENT, f"cannot move a directory into itself: {s_where} -> {d_where}"
                )
            if cur.id == ROOT_ID:
                return
            cur = self.tree.get(r, cur.parent_id, d_where)
        raise ChainfsError(Reason.INTERNAL, f"directory parent chain does not reach the root: {d_where}")

    @retry_conflicts
    def remove(self, path: str, recursive: bool = False, request_id: str = "") -> None:
        parts = split_path(path)
        where = join_parts(parts)
        if not parts:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"cannot remove the root: {where}")
        with self._lock:
            txn = self.store.txn()
            if request_ids.replay(txn, request_id, "remove") is not None:
                return
            parent = self.tree.walk_dir(txn, parts[:-1], where)
            child_id = txn.lookup(parent.id, parts[-1])
            if child_id is None:
                raise ChainfsError(Reason.NOT_FOUND, f"no such file or directory: {where}")
            inode = self.tree.get(txn, child_id, where)
            if inode.type == pb.DIRECTORY and txn.has_children(inode.id):
                if not recursive:
                    raise ChainfsError(Reason.NOT_EMPTY, f"directory not empty: {where}")
                count = self._remove_subtree(txn, inode.id, where)
                log.info("removing %s with %d entries below it", where, count)
            elif inode.type != pb.DIRECTORY:
                self.tree.gc(txn, inode, f"removed {where}")
            txn.unlink(parent.id, parts[-1])
            txn.delete_inode(inode.id)
            now = self.clock_ns()
            self.tree.touch(txn, parent.id, now)
            request_ids.remember(txn, request_id, "remove", b"", now)
            self.store.commit(txn)

    def _remove_subtree(self, txn: Txn, dir_id: int, where: str) -> int:
        """Queues the deletion of everything below a directory; file inodes become GC records."""
        stack, count = [dir_id], 0
        while stack:
            current = stack.pop()
            # Listed before this txn touches `current`'s entries, so this is the committed state
            # (read through the txn, so the etcd backend validates it at commit).
            for name, child_id in list(txn.children(current)):
                child = txn.get_inode(child_id)
                if child is not None:
                    if child.type == pb.DIRECTORY:
                        stack.append(child_id)
                    else:
                        self.tree.gc(txn, child, f"removed {where} recursively")
                    txn.delete_inode(child_id)
                txn.unlink(current, name)
                count += 1
        return count

    @retry_conflicts
    def set_layout(self, path: str, layout: pb.Layout) -> pb.Inode:
        """New defaults for files created later in a directory (existing files keep theirs)."""
        parts = split_path(path)
        where = join_parts(parts)
        with self._lock:
            txn = self.store.txn()
            inode = self.tree.walk(txn, parts, where)
            if inode.type != pb.DIRECTORY:
                raise ChainfsError(Reason.NOT_A_DIRECTORY, f"layouts are set on directories only: {where}")
            inode.layout.CopyFrom(validate_layout(merge_layout(inode.layout, layout), where))
            inode.ctime_ns = self.clock_ns()
            txn.put_inode(inode)
            self.store.commit(txn)
            return inode

    @retry_conflicts
    def sweep_request_ids(self) -> int:
        """Forgets request ids older than REQUEST_ID_TTL (one batch); returns how many."""
        with self._lock:
            txn = self.store.txn()
            count = request_ids.sweep(txn, self.clock_ns() - self.request_ttl_ns)
            self.store.commit(txn)
        return count

    # ---- garbage ----

    def gc_records(self, limit: int | None = None) -> list[GcRecord]:
        """Pending garbage (file inodes whose chunks must be deleted), oldest inode ids first."""
        out: list[GcRecord] = []
        for raw in self.store.values(P_GC):
            if limit is not None and len(out) >= limit:
                break
            out.append(GcRecord.from_bytes(raw))
        return out

    @retry_conflicts
    def remove_gc_records(self, done: Iterable[int | GcRecord]) -> None:
        """Called by the collector once an inode's chunks are gone from every chain.

        Given the records it processed, a record rewritten meanwhile (an append session that
        outlived its file writes it again, for chunks written since) is kept for the next pass.
        """
        with self._lock:
            txn = self.store.txn()
            for item in done:
                inode_id = item if isinstance(item, int) else item.inode_id
                if not isinstance(item, int):
                    raw = txn.get(gc_key(inode_id))
                    if raw is not None and GcRecord.from_bytes(raw).created_ns != item.created_ns:
                        continue
                txn.delete(gc_key(inode_id))
            self.store.commit(txn)
