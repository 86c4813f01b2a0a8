"""Write sessions: how a file's content becomes visible atomically.

Why sessions: chunk data goes straight from the client to storage, so the metaserver only learns
when a write starts and ends. REPLACE and CREATE_NEW write a NEW, unlinked inode and link it at
close in one batch, so readers see either the old file or the whole new one, never a mix. APPEND
writes into the existing inode and publishes the new length at close. A session holds a lease;
a session whose client vanished expires and its unlinked inode becomes garbage. On etcd the lease
is also an etcd lease (see `Txn.attach_lease`), so one clock decides for every metaserver.

`WriteSessions` is a component beside the namespace: it walks and builds the tree through the same
`Tree` and holds the same mutation lock, which `Namespace` hands it; `Namespace` forwards the
session calls to it, so the servicer and the collector keep one object to call.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from chainfs.common import auth
from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver import request_ids
from chainfs.metaserver.extent_check import ChunkExtentCheck, check_length_bound
from chainfs.common.paths import join_parts, split_path
from chainfs.metaserver.records import SessionRecord, check_session_id, new_session_id
from chainfs.metaserver.store import P_SESSION, Store, Txn, retry_conflicts, session_key
from chainfs.metaserver.tree import Tree
from chainfs.proto import meta_pb2 as pb

log = logging.getLogger(__name__)

SESSION_MODES = (pb.REPLACE, pb.CREATE_NEW, pb.APPEND)  # what OpenWrite accepts


class WriteSessions:
    """Open, renew and close write sessions, and sweep the expired ones, over `store`."""

    def __init__(self, store: Store, tree: Tree, lock: Any, lease_ns: int, clock_ns: Callable[[], int],
                 extent_check: ChunkExtentCheck | None = None) -> None:
        self.store = store
        self.tree = tree
        self._lock = lock  # the namespace's mutation lock
        self.lease_ns = lease_ns
        self.clock_ns = clock_ns
        # Asks storage whether the chunk holding a length's last byte ends there (None: bounds only).
        self.extent_check = extent_check

    @retry_conflicts
    def open_write(
        self,
        path: str,
        mode: int,
        parents: bool = False,
        layout: pb.Layout | None = None,
        client_id: str = "",
        request_id: str = "",
        owner: str = "",
    ) -> pb.WriteSession:
        if mode not in SESSION_MODES:
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"unknown write mode {mode}: {path}")
        with self._lock:
            txn = self.store.txn()
            first = request_ids.replay(txn, request_id, "open_write")
            if first is not None:  # the first open's session, not a second one that would hold the file
                return pb.WriteSession.FromString(first)
            now = self.clock_ns()
            session = self._open(txn, path, mode, parents, layout, client_id, now, owner)
            request_ids.remember(txn, request_id, "open_write", session.SerializeToString(), now)
            self.store.commit(txn)
            return session

    @retry_conflicts
    def open_write_many(
        self,
        paths: Sequence[str],
        mode: int,
        parents: bool = False,
        layout: pb.Layout | None = None,
        client_id: str = "",
        owner: str = "",
    ) -> list[pb.WriteSession | ChainfsError]:
        """One REPLACE/CREATE_NEW session per path, opened in one synced batch; a path that cannot
        be opened gets its error and changes nothing. APPEND stays one file at a time, since two
        appenders of one file must not both start at the same length."""
        if mode not in (pb.REPLACE, pb.CREATE_NEW):
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"batched writes are REPLACE or CREATE_NEW, not {mode}")
        with self._lock:
            txn = self.store.txn()
            now = self.clock_ns()
            out: list[pb.WriteSession | ChainfsError] = []
            for path in paths:
                saved = dict(txn.writes)
                try:
                    out.append(self._open(txn, path, mode, parents, layout, client_id, now, owner))
                except ChainfsError as exc:
                    txn.writes = saved
                    out.append(exc)
            self.store.commit(txn)
            return out

    def _open(self, txn: Txn, path: str, mode: int, parents: bool, layout: pb.Layout | None,
              client_id: str, now: int, owner: str = "") -> pb.WriteSession:
        """A session's records, added to `txn` (the caller commits it)."""
        parts = split_path(path)
        where = join_parts(parts)
        if not path:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "path is required")
        if not parts:
            raise ChainfsError(Reason.IS_A_DIRECTORY, f"is a directory: {where}")
        parent = self.tree.parent_dir(txn, parts, where, parents)
        existing_id = txn.lookup(parent.id, parts[-1])
        existing = None if existing_id is None else self.tree.get(txn, existing_id, where)
        if existing is not None and existing.type == pb.DIRECTORY:
            raise ChainfsError(Reason.IS_A_DIRECTORY, f"is a directory: {where}")
        if existing is not None and mode == pb.CREATE_NEW:
            raise ChainfsError(Reason.EXISTS, f"file exists: {where}")
        base_length = 0
        if mode == pb.APPEND and existing is not None:
            self._refuse_second_append(txn, existing.id, now, where)
            inode, base_length = existing, existing.length
        else:
            inode = self.tree.new_file(txn, parent, layout, where)
            if mode == pb.APPEND:  # appending to a missing file creates it, empty and visible
                txn.put_inode(inode)
                txn.link(parent.id, parts[-1], inode.id)
                self.tree.touch(txn, parent.id, now)
        record = SessionRecord(
            session_id=new_session_id(),
            parent_id=parent.id,
            name=parts[-1],
            path=where,
            mode=mode,
            inode_hex="",
            lease_expires_ns=now + self.lease_ns,
            client_id=client_id,
            owner=owner,
            base_length=base_length,
            created_ns=now,
        )
        record.inode = inode
        txn.put(session_key(record.session_id), record.to_bytes())
        txn.attach_lease(session_key(record.session_id), self.lease_ns)
        log.debug("session %s open: %s %s inode %d", record.session_id, pb.WriteMode.Name(mode), where, inode.id)
        return record.to_proto()

    @retry_conflicts
    def renew_session(self, session_id: str, caller: str = "") -> pb.WriteSession:
        check_session_id(session_id)
        with self._lock:
            txn = self.store.txn()
            now = self.clock_ns()
            try:
                record = self._live_session(txn, session_id, now)
            except ChainfsError:
                self.store.commit(txn)  # an expired session is swept here, then refused
                raise
            auth.check_owner(record.owner, caller, f"write session {session_id}")
            record.lease_expires_ns = now + self.lease_ns
            txn.renew_lease(session_key(session_id))
            if record.mode == pb.APPEND:
                current = txn.get_inode(record.inode.id)
                if current is not None:
                    record.inode = current
            txn.put(session_key(session_id), record.to_bytes())
            self.store.commit(txn)
            return record.to_proto()

    def close_write(self, session_id: str, length: int, commit: bool = True, caller: str = "") -> pb.Inode:
        """Publishes (or abandons) a session's inode; returns the inode as it now is.

        Idempotent: a retry of a close whose reply was lost gets the first close's answer. A length
        the session's chunks do not back is refused (INVALID_ARGUMENT) and the session stays open.
        """
        result = self.close_write_many([(session_id, length, commit)], caller)[0]
        if isinstance(result, ChainfsError):
            raise result
        return result

    def close_write_many(self, closes: Sequence[tuple[str, int, bool]],
                         caller: str = "") -> list[pb.Inode | ChainfsError]:
        """Closes (session id, length, commit) items in ONE synced batch, so the committed files of
        a batch appear together, each whole; an item that fails gets its error in its place."""
        return self._close_many(closes, self._check_extents(closes, caller), caller)

    def _check_extents(self, closes: Sequence[tuple[str, int, bool]], caller: str = "") -> dict[int, ChainfsError]:
        """The refusals of committing closes whose length is out of bounds or not backed by their
        chunks, found outside the lock (storage round trips must not hold the namespace); a session's
        inode and base length never change while it is open."""
        refused: dict[int, ChainfsError] = {}
        asks: list[tuple[int, pb.Inode, int, str]] = []
        for i, (session_id, length, commit) in enumerate(closes):
            try:
                check_session_id(session_id)
            except ChainfsError as exc:
                refused[i] = exc
                continue
            raw = self.store.get(session_key(session_id)) if commit else None
            record = None if raw is None else SessionRecord.from_bytes(raw)
            if record is None or record.closed or (record.owner and record.owner != caller):
                continue  # unknown, swept, closed or another's: the locked part gives the answer
            try:
                check_length_bound(record.inode, length, record.path)
            except ChainfsError as exc:
                refused[i] = exc
                continue
            if length > record.base_length:
                asks.append((i, record.inode, length, record.path))
        if self.extent_check is not None and asks:
            answers = self.extent_check.check_many([(inode, length, where) for _, inode, length, where in asks])
            refused.update((i, exc) for (i, *_), exc in zip(asks, answers) if exc is not None)
        return refused

    @retry_conflicts
    def _close_many(self, closes: Sequence[tuple[str, int, bool]],
                    refused: dict[int, ChainfsError], caller: str = "") -> list[pb.Inode | ChainfsError]:
        with self._lock:
            txn = self.store.txn()
            now = self.clock_ns()
            out: list[pb.Inode | ChainfsError] = []
            for i, (session_id, length, commit) in enumerate(closes):
                if i in refused:  # the session stays open for a good close
                    out.append(refused[i])
                    continue
                saved = dict(txn.writes)
                try:
                    out.append(self._close_session(txn, session_id, length, commit, now, caller))
                except ChainfsError as exc:
                    if exc.reason in (Reason.INVALID_ARGUMENT, Reason.PERMISSION_DENIED):
                        txn.writes = saved  # a bad request changes nothing: the session stays open
                    out.append(exc)
            self.store.commit(txn)
            return out

    def _close_session(self, txn: Txn, session_id: str, length: int, commit: bool, now: int,
                       caller: str = "") -> pb.Inode:
        raw = txn.get(session_key(session_id))
        if raw is not None:
            earlier = SessionRecord.from_bytes(raw)
            auth.check_owner(earlier.owner, caller, f"write session {session_id}")
            if earlier.closed:
                return self._replay_close(earlier, commit)
        record = self._live_session(txn, session_id, now)
        try:
            inode = self._close(txn, record, length, commit, now)
        except ChainfsError as exc:
            if exc.reason != Reason.INVALID_ARGUMENT:
                self._mark_closed(txn, record, now, "failed", error=exc)
            raise
        self._mark_closed(txn, record, now, "committed" if commit else "abandoned", result=inode)
        return inode

    def _close(self, txn: Txn, record: SessionRecord, length: int, commit: bool, now: int) -> pb.Inode:
        """The namespace change of a close, added to `txn` (the caller commits it)."""
        inode = record.inode
        where = record.path
        if not commit:
            if record.mode != pb.APPEND:
                self.tree.gc(txn, inode, f"session {record.session_id} abandoned", length)
                return inode
            return txn.get_inode(inode.id) or inode  # the file keeps its length from before
        if record.mode == pb.APPEND:
            return self._close_append(txn, record, length, now)
        failure = self._link_conflict(txn, record)
        if failure is not None:
            self.tree.gc(txn, inode, f"session {record.session_id} failed: {failure.reason.value}", length)
            raise failure
        old_id = txn.lookup(record.parent_id, record.name)
        if old_id is not None:
            old = self.tree.get(txn, old_id, where)
            self.tree.gc(txn, old, f"replaced by session {record.session_id}")
            txn.delete_inode(old.id)
        inode.length = length
        inode.mtime_ns = inode.ctime_ns = now
        inode.parent_id = record.parent_id
        txn.put_inode(inode)
        txn.link(record.parent_id, record.name, inode.id)
        self.tree.touch(txn, record.parent_id, now)
        return inode

    def _mark_closed(self, txn: Txn, record: SessionRecord, now: int, outcome: str,
                     result: pb.Inode | None = None, error: ChainfsError | None = None) -> None:
        record.closed = outcome
        record.lease_expires_ns = now + self.lease_ns  # how long a retried close is remembered
        txn.release_lease(session_key(record.session_id))
        if result is not None:
            record.result_hex = result.SerializeToString().hex()
        if error is not None:
            record.error_reason, record.error_message = error.reason.value, error.message
        txn.put(session_key(record.session_id), record.to_bytes())

    @staticmethod
    def _replay_close(record: SessionRecord, commit: bool) -> pb.Inode:
        if record.closed == "failed":
            raise ChainfsError(Reason(record.error_reason), record.error_message)
        if (record.closed == "committed") != commit:
            raise ChainfsError(Reason.SESSION_EXPIRED,
                               f"write session {record.session_id} was already {record.closed}: {record.path}")
        return pb.Inode.FromString(bytes.fromhex(record.result_hex))

    def _link_conflict(self, txn: Txn, record: SessionRecord) -> ChainfsError | None:
        """Why a REPLACE/CREATE_NEW inode cannot be linked now (checked again at commit)."""
        where = record.path
        parent = txn.get_inode(record.parent_id)
        if parent is None or parent.type != pb.DIRECTORY:
            return ChainfsError(Reason.NOT_FOUND, f"parent directory was removed during the write: {where}")
        existing_id = txn.lookup(record.parent_id, record.name)
        if existing_id is None:
            return None
        existing = self.tree.get(txn, existing_id, where)
        if existing.type == pb.DIRECTORY:
            return ChainfsError(Reason.IS_A_DIRECTORY, f"a directory appeared during the write: {where}")
        if record.mode == pb.CREATE_NEW:
            return ChainfsError(Reason.EXISTS, f"file exists: {where}")
        return None

    def _close_append(self, txn: Txn, record: SessionRecord, length: int, now: int) -> pb.Inode:
        current = txn.get_inode(record.inode.id)
        if current is None:
            # Removed or replaced while appending: chunks written since a GC pass must go too.
            self.tree.gc(txn, record.inode, f"append session {record.session_id} outlived its file", length)
            raise ChainfsError(Reason.NOT_FOUND, f"file was removed during the append: {record.path}")
        if length < record.base_length:
            raise ChainfsError(
                Reason.INVALID_ARGUMENT,
                f"append cannot shrink a file ({length} < {record.base_length}): {record.path}",
            )
        current.length = length
        current.mtime_ns = current.ctime_ns = now
        txn.put_inode(current)
        return current

    def _refuse_second_append(self, txn: Txn, inode_id: int, now: int, where: str) -> None:
        """Two appenders would both start at the same length and the last close would win, so an
        APPEND waits (BUSY, retryable) while another open APPEND session holds the file. The
        sessions are read through the txn, so on etcd an append opened meanwhile by another
        metaserver fails this commit and the open reruns (and then waits)."""
        for raw in txn.values(P_SESSION):
            other = SessionRecord.from_bytes(raw)
            if (not other.closed and other.mode == pb.APPEND and other.lease_expires_ns >= now
                    and other.inode.id == inode_id):
                raise ChainfsError(Reason.BUSY, f"another append session ({other.session_id}) is open: {where}")

    def _live_session(self, txn: Txn, session_id: str, now: int) -> SessionRecord:
        """The session, or SESSION_EXPIRED (an expired one is swept in `txn`, then refused)."""
        raw = txn.get(session_key(session_id))
        if raw is None:
            raise ChainfsError(Reason.SESSION_EXPIRED, f"unknown or expired write session {session_id}")
        record = SessionRecord.from_bytes(raw)
        if record.closed:
            raise ChainfsError(Reason.SESSION_EXPIRED, f"write session {session_id} is closed: {record.path}")
        if self._lapsed(txn, record, now):
            self._expire(txn, record)  # the caller commits the sweep with whatever else it did
            raise ChainfsError(
                Reason.SESSION_EXPIRED, f"write session {session_id} expired: {record.path}"
            )
        return record

    @staticmethod
    def _lapsed(txn: Txn, record: SessionRecord, now: int) -> bool:
        """A session's lease ran out: by its expiry time, or (etcd) its etcd lease lapsed."""
        if record.lease_expires_ns < now:
            return True
        return not record.closed and not txn.lease_alive(session_key(record.session_id))

    def _expire(self, txn: Txn, record: SessionRecord) -> None:
        txn.delete(session_key(record.session_id))
        if record.closed:  # only the memory of a close, kept for retries, ends here
            return
        txn.release_lease(session_key(record.session_id))
        inode = record.inode
        if record.mode != pb.APPEND:
            self.tree.gc(txn, inode, f"session {record.session_id} expired", 0)
        elif txn.get_inode(inode.id) is None:
            self.tree.gc(txn, inode, f"append session {record.session_id} expired after its file went")

    @retry_conflicts
    def sweep_expired_sessions(self, now_ns: int | None = None) -> int:
        """Ends every session whose lease ran out (one batch); returns how many."""
        with self._lock:
            now = self.clock_ns() if now_ns is None else now_ns
            txn = self.store.txn()
            expired = 0
            for raw in txn.values(P_SESSION):  # through the txn: validated at commit on etcd
                record = SessionRecord.from_bytes(raw)
                if self._lapsed(txn, record, now):
                    self._expire(txn, record)
                    expired += 0 if record.closed else 1
            self.store.commit(txn)
        if expired:
            log.info("swept %d expired write sessions", expired)
        return expired

    def sessions(self) -> list[SessionRecord]:
        """Every open session (for tests and status pages)."""
        records = (SessionRecord.from_bytes(raw) for raw in self.store.values(P_SESSION))
        return [r for r in records if not r.closed]
