"""Inode attributes: chmod, chown, utimens and a published length (SetAttr), one synced batch each.

A component beside the namespace (it holds the namespace's mutation lock and walks through the same
`Tree`), kept apart because it is the one operation that changes an inode in place without touching
the tree; `Namespace.set_attr` forwards to it.
"""

from __future__ import annotations

from typing import Any, Callable

from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.extent_check import check_length_bound
from chainfs.common.paths import join_parts, split_path
from chainfs.metaserver.store import Store, retry_conflicts
from chainfs.metaserver.tree import Tree
from chainfs.proto import meta_pb2 as pb


class Attrs:
    """SetAttr over `store`, one synced batch each."""

    def __init__(self, store: Store, tree: Tree, lock: Any, clock_ns: Callable[[], int]) -> None:
        self.store = store
        self.tree = tree
        self._lock = lock  # the namespace's mutation lock
        self.clock_ns = clock_ns

    @retry_conflicts
    def set_attr(self, path: str, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                 atime_ns: int | None = None, mtime_ns: int | None = None,
                 length: int | None = None) -> pb.Inode:
        """chmod, chown, utimens and truncate in one batch: only the given fields change.

        Why the length is a plain field: the client cuts or zeroes the chunks past the new length
        first (a shrink must not leave old bytes for a later extension to expose), then publishes it.
        """
        parts = split_path(path)
        where = join_parts(parts)
        if mode is not None and not 0 <= mode <= 0o7777:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"mode {mode:o} is not a permission mask: {where}")
        for name, value in (("atime_ns", atime_ns), ("mtime_ns", mtime_ns), ("length", length)):
            if value is not None and value < 0:
                raise ChainfsError(Reason.INVALID_ARGUMENT, f"negative {name}: {where}")
        with self._lock:
            txn = self.store.txn()
            inode = self.tree.walk(txn, parts, where)
            now = self.clock_ns()
            if length is not None:
                if inode.type == pb.DIRECTORY:
                    raise ChainfsError(Reason.IS_A_DIRECTORY, f"is a directory: {where}")
                check_length_bound(inode, length, where)
                if length != inode.length:
                    inode.length = length
                    inode.mtime_ns = now
            for name, value in (("mode", mode), ("uid", uid), ("gid", gid), ("atime_ns", atime_ns),
                                ("mtime_ns", mtime_ns)):
                if value is not None:
                    setattr(inode, name, value)
            inode.ctime_ns = now
            txn.put_inode(inode)
            self.store.commit(txn)
            return inode
