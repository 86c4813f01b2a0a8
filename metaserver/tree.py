"""The directory tree over a store's readers: path walks, new inodes, garbage records.

Why a component of its own: the namespace operations (`namespace.py`), write sessions
(`sessions.py`) and attributes (`attrs.py`) all walk paths and make inodes the same way; each reads
through whatever `Reader` it holds (the store, a snapshot or a transaction), so on etcd every read
of a mutation is validated at its commit. Nothing here takes a lock or commits: callers do.
"""

from __future__ import annotations

from typing import Callable

from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.layout import ChainSource, merge_layout, pick_chains, validate_layout
from chainfs.metaserver.records import GcRecord
from chainfs.metaserver.store import C_INODE, ROOT_ID, Reader, Txn, gc_key
from chainfs.proto import meta_pb2 as pb

DIR_MODE = 0o755
FILE_MODE = 0o644


class Tree:
    """Reads and builds the tree; `chains` picks a new file's stripe, `clock_ns` stamps times."""

    def __init__(self, chains: ChainSource | None, clock_ns: Callable[[], int]) -> None:
        self.chains = chains
        self.clock_ns = clock_ns

    def get(self, r: Reader, inode_id: int, path: str) -> pb.Inode:
        inode = r.get_inode(inode_id)
        if inode is None:  # a dentry without its inode: only a concurrent removal explains it
            raise ChainfsError(Reason.NOT_FOUND, f"no such file or directory: {path}")
        return inode

    def walk(self, r: Reader, parts: list[str], path: str) -> pb.Inode:
        """The inode at `parts`; NOT_FOUND, or NOT_A_DIRECTORY when a middle component is a file."""
        return self.walk_from(r, self.get(r, ROOT_ID, path), parts, path)

    def walk_from(self, r: Reader, cur: pb.Inode, parts: list[str], path: str) -> pb.Inode:
        for name in parts:
            if cur.type != pb.DIRECTORY:
                raise ChainfsError(Reason.NOT_A_DIRECTORY, f"not a directory in path: {path}")
            child = r.lookup(cur.id, name)
            if child is None:
                raise ChainfsError(Reason.NOT_FOUND, f"no such file or directory: {path}")
            cur = self.get(r, child, path)
        return cur

    def walk_dir(self, r: Reader, parts: list[str], path: str) -> pb.Inode:
        inode = self.walk(r, parts, path)
        if inode.type != pb.DIRECTORY:
            raise ChainfsError(Reason.NOT_A_DIRECTORY, f"not a directory: {path}")
        return inode

    def parent_dir(self, txn: Txn, parts: list[str], path: str, parents: bool) -> pb.Inode:
        """The directory that will hold parts[-1], creating missing ones when `parents`."""
        cur = self.get(txn, ROOT_ID, path)
        for name in parts[:-1]:
            if cur.type != pb.DIRECTORY:
                raise ChainfsError(Reason.NOT_A_DIRECTORY, f"not a directory in path: {path}")
            child = txn.lookup(cur.id, name)
            if child is None:
                if not parents:
                    raise ChainfsError(Reason.NOT_FOUND, f"parent directory does not exist: {path}")
                cur = self.new_dir(txn, cur, name, None, path)
            else:
                cur = self.get(txn, child, path)
        if cur.type != pb.DIRECTORY:
            raise ChainfsError(Reason.NOT_A_DIRECTORY, f"parent is not a directory: {path}")
        return cur

    def touch(self, txn: Txn, dir_id: int, now: int) -> None:
        """A directory's mtime moves when an entry is added or removed (re-read: txn may hold a newer copy)."""
        inode = txn.get_inode(dir_id)
        if inode is not None:
            inode.mtime_ns = now
            txn.put_inode(inode)

    def new_dir(self, txn: Txn, parent: pb.Inode, name: str, layout: pb.Layout | None, path: str) -> pb.Inode:
        """A new directory, stored and linked under `parent`."""
        now = self.clock_ns()
        inode = pb.Inode(
            id=txn.allocate(C_INODE, ROOT_ID + 1),
            type=pb.DIRECTORY,
            layout=validate_layout(merge_layout(parent.layout, layout), path),
            ctime_ns=now,
            mtime_ns=now,
            mode=DIR_MODE,
            parent_id=parent.id,
        )
        txn.put_inode(inode)
        txn.link(parent.id, name, inode.id)
        self.touch(txn, parent.id, now)
        return inode

    def new_file(self, txn: Txn, parent: pb.Inode, layout: pb.Layout | None, path: str) -> pb.Inode:
        """A new file inode with its stripe picked; NOT stored or linked (callers decide)."""
        merged = validate_layout(merge_layout(parent.layout, layout), path)
        inode_id = txn.allocate(C_INODE, ROOT_ID + 1)
        chains = pick_chains(self.chains.chain_lengths() if self.chains else (), inode_id, merged, path)
        merged.chains.extend(chains)
        merged.stripe_width = len(chains)  # what the file really spreads over
        now = self.clock_ns()
        return pb.Inode(
            id=inode_id,
            type=pb.FILE,
            length=0,
            layout=merged,
            ctime_ns=now,
            mtime_ns=now,
            mode=FILE_MODE,
            parent_id=parent.id,
        )

    def gc(self, txn: Txn, inode: pb.Inode, reason: str, length: int | None = None) -> None:
        """Records a file inode whose chunks the collector must delete (`length`: how far they go)."""
        record = GcRecord.of(inode, self.clock_ns(), reason, length)
        txn.put(gc_key(inode.id), record.to_bytes())
