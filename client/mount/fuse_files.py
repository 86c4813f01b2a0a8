"""The mount's open files: one OpenFile per path, shared by every handle on it.

Why per path and not per handle: POSIX readers see a writer's bytes at once (SQLite reads pages it
wrote through the same or another descriptor), and chainfs publishes bytes only at a commit. So the
mount keeps a file's unwritten changes (a DirtyMap of byte ranges per chunk) and answers reads
from storage with those changes laid over. A commit (close, fsync) writes the changed ranges and
closes the file's session: a new or O_TRUNC'ed file is a REPLACE session (visible whole at the
commit, as any chainfs write), an existing file an APPEND session on its own inode whose ranges are
patched in place (client/files/file_edit.py). Whole chunks are written as soon as they are complete, so a
long sequential copy streams instead of piling up in memory. Attributes set while a session is open
(cp -a sets times before close) are kept and applied right after its commit, which would
otherwise stamp the time of the commit.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from concurrent.futures import Future

from chainfs.common import config
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.files.file_edit import cut, submit_range
from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.client.fsspec.fs_file import ReadAheadCache
from chainfs.client.rpc.placement import chunk_ranges

log = logging.getLogger(__name__)

DIRTY_LIMIT = 64 * config.MiB  # unwritten bytes a file may hold before they are written out


class DirtyMap:
    """Changed byte ranges not yet written: per chunk index, sorted disjoint [start, bytes] extents."""

    def __init__(self, chunk_size: int) -> None:
        self.cs = chunk_size
        self.chunks: dict[int, list[tuple[int, bytearray]]] = {}
        self.bytes = 0

    def put(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        for r in chunk_ranges(offset, len(view), self.cs):
            self._insert(r.index, r.offset, view[r.file_offset - offset:r.file_offset - offset + r.length])

    def _insert(self, index: int, start: int, data: memoryview) -> None:
        end = start + len(data)
        keep, merge = [], []
        for extent in self.chunks.get(index, []):
            (merge if extent[0] <= end and extent[0] + len(extent[1]) >= start else keep).append(extent)
        lo = min([start] + [s for s, _ in merge])
        hi = max([end] + [s + len(b) for s, b in merge])
        buf = bytearray(hi - lo)
        for s, b in merge:
            buf[s - lo:s - lo + len(b)] = b
            self.bytes -= len(b)
        buf[start - lo:end - lo] = data
        self.bytes += len(buf)
        self.chunks[index] = sorted(keep + [(lo, buf)], key=lambda e: e[0])

    def overlay(self, offset: int, out: bytearray) -> None:
        """Lays the changes inside [offset, offset + len(out)) over `out`."""
        end = offset + len(out)
        for index in range(offset // self.cs, (end - 1) // self.cs + 1 if end > offset else 0):
            base = index * self.cs
            for s, b in self.chunks.get(index, ()):
                lo, hi = max(offset, base + s), min(end, base + s + len(b))
                if lo < hi:
                    out[lo - offset:hi - offset] = b[lo - base - s:hi - base - s]

    def full(self) -> list[int]:
        return [i for i, ext in self.chunks.items() if len(ext) == 1 and ext[0][0] == 0 and len(ext[0][1]) == self.cs]

    def pop(self, index: int) -> list[tuple[int, bytearray]]:
        extents = self.chunks.pop(index, [])
        self.bytes -= sum(len(b) for _, b in extents)
        return extents


class OpenFile:
    """A path's committed inode, its open session, unwritten changes and pending attributes."""

    def __init__(self, fs: ChainFileSystem, path: str, inode: mpb.Inode | None) -> None:
        self.fs, self.client, self.path = fs, fs.client, path
        self.inode = inode  # the file as committed (None: a new file, not yet written anywhere)
        self.length = inode.length if inode is not None else 0
        self.session: mpb.WriteSession | None = None
        self.replacing = False  # the session writes a new, unlinked inode (REPLACE)
        self.dirty = DirtyMap(inode.layout.chunk_size if inode is not None else config.DEFAULT_CHUNK_SIZE)
        self.pending: dict[str, int] = {}  # attributes to apply after the next commit
        self.handles = 0
        self.unlinked = False
        self._lost = False  # unlinked after some of its bytes were written to a session now abandoned
        self.lock = threading.RLock()
        self._in_flight: dict[int, Future] = {}
        self._cache: ReadAheadCache | None = None
        self._renew_at = 0.0

    # ---- what stat shows ----

    @property
    def busy(self) -> bool:
        return self.session is not None or bool(self.dirty.chunks) or bool(self.pending)

    def view(self) -> mpb.Inode:
        """The inode as this mount sees it: committed fields, the current length, pending attributes."""
        with self.lock:
            inode = mpb.Inode()
            if self.session is not None and self.replacing:
                inode.CopyFrom(self.session.inode)
            elif self.inode is not None:
                inode.CopyFrom(self.inode)
            inode.length = self.length
            for name, value in self.pending.items():
                setattr(inode, name, value)
            return inode

    # ---- sessions ----

    def start_replace(self, attrs: dict[str, int]) -> None:
        """create or O_TRUNC: the file's content starts empty in a new inode, committed later."""
        with self.lock:
            if self.session is not None:
                if self.replacing:
                    self._end_session(commit=False)
                else:
                    self.commit()
            self._drop_dirty()
            self.session = self.client.open_writer(self.path, mpb.REPLACE, parents=False).session
            self.replacing = True
            self.dirty = DirtyMap(self.session.inode.layout.chunk_size)
            self.length = 0
            self.pending.update(attrs)
            self._renew_at = time.monotonic() + config.WRITE_SESSION_LEASE / 3

    def _target(self) -> mpb.Inode:
        """The inode writes go to, opening an APPEND session on the committed inode if needed."""
        if self.session is None:
            session = self.client.open_writer(self.path, mpb.APPEND, parents=False).session
            if self.inode is not None and session.inode.id != self.inode.id:
                self.client.meta.close_write(session.session_id, session.inode.length, commit=False, path=self.path)
                raise OSError(errno.ESTALE, "the file was replaced by another client since it was opened", self.path)
            self.session, self.replacing = session, False
            if self.inode is None:
                self.inode = session.inode
                self.dirty = DirtyMap(session.inode.layout.chunk_size)
            self._renew_at = time.monotonic() + config.WRITE_SESSION_LEASE / 3
        elif time.monotonic() >= self._renew_at:
            self.client.meta.renew_session(self.session.session_id, self.path)
            self._renew_at = time.monotonic() + config.WRITE_SESSION_LEASE / 3
        return self.session.inode

    def _end_session(self, commit: bool) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        inode = self.client.meta.close_write(session.session_id, self.length, commit=commit, path=self.path)
        if commit:
            self.inode = inode
        self.replacing = False

    # ---- data ----

    def write(self, offset: int, data: bytes) -> int:
        with self.lock:
            if self.unlinked:  # the name is gone; POSIX keeps the open file usable: in memory
                self.dirty.put(offset, data)
                self.length = max(self.length, offset + len(data))
                return len(data)
            target = self._target()
            self._cache = None
            self.dirty.put(offset, data)
            self.length = max(self.length, offset + len(data))
            self.pending.pop("mtime_ns", None)  # a write after utimens moves the mtime again
            for index in self.dirty.full():
                self._write_out(target, index)
            if self.dirty.bytes > DIRTY_LIMIT:
                self._write_all(target)
            return len(data)

    def _write_out(self, target: mpb.Inode, index: int) -> None:
        """Starts writing one chunk's changes (after any earlier write of that chunk)."""
        earlier = self._in_flight.pop(index, None)
        if earlier is not None:
            earlier.result()
        extents = self.dirty.pop(index)
        if not extents:
            return
        base = index * self.dirty.cs
        if len(extents) > 1:  # one partial update over the span, gaps filled from storage
            lo, hi = extents[0][0], max(s + len(b) for s, b in extents)
            span = bytearray(self.client.read_ranges([(target, base + lo, base + hi)])[0])
            span[len(span):hi - lo] = bytes(hi - lo - len(span))
            for s, b in extents:
                span[s - lo:s - lo + len(b)] = b
            extents = [(lo, span)]
        futures = submit_range(self.client, target, base + extents[0][0], extents[0][1])
        self._in_flight[index] = futures[0]
        in_flight_cap = max(2, 2 * len(target.layout.chains))
        while len(self._in_flight) > in_flight_cap:
            self._in_flight.pop(next(iter(self._in_flight))).result()

    def _write_all(self, target: mpb.Inode) -> None:
        for index in list(self.dirty.chunks):
            self._write_out(target, index)
        self._drain()

    def _drain(self) -> None:
        while self._in_flight:
            self._in_flight.pop(next(iter(self._in_flight))).result()

    def read(self, offset: int, size: int) -> bytes:
        with self.lock:
            end = min(self.length, offset + size)
            if end <= offset:
                return b""
            if not self.busy and self.inode is not None and not self.unlinked:
                return self._cached(offset, end)
            if self._lost:
                raise OSError(errno.ESTALE, "the file was removed while its changes were being written", self.path)
            self._drain()
            source = self.session.inode if self.session is not None else self.inode
            out = bytearray(end - offset)
            if source is not None:
                stored = self._stored(source, offset, end, checked=self.session is None)
                out[:len(stored)] = stored
            self.dirty.overlay(offset, out)
            return bytes(out)

    def _stored(self, inode: mpb.Inode, start: int, end: int, checked: bool = True) -> bytes:
        """Committed bytes; a hole in a file that is no longer at its path may be collected chunks,
        and zeros would then be wrong bytes, so that fails (as ChainfsFile's reads do)."""
        holes: set[int] = set()
        data = self.client.read_ranges([(inode, start, end)], holes)[0]
        if holes and checked:
            try:
                current = self.client.stat(self.path).id
            except FileNotFoundError:
                current = None
            if current != inode.id:
                raise OSError(errno.ESTALE, "the file was removed or replaced and its chunks collected", self.path)
        return data

    def _cached(self, offset: int, end: int) -> bytes:
        assert self.inode is not None
        inode = self.inode
        if self._cache is None or self._cache.size != self.length:
            window = max(self.fs.blocksize, len(inode.layout.chains) * inode.layout.chunk_size)
            self._cache = ReadAheadCache(min(window, 64 * config.MiB),
                                         lambda s, e: self._stored(inode, s, e), self.length)
        return self._cache._fetch(offset, end)

    # ---- commit, length, attributes ----

    def commit(self) -> None:
        """Writes every change and closes the session: the file is then visible to every client."""
        with self.lock:
            if self.unlinked:
                return  # nowhere to commit to: the open file lives on in memory until released
            if self.session is not None:
                self._write_all(self.session.inode)
                self._end_session(commit=True)
            if self.pending:
                changes, self.pending = self.pending, {}
                self.inode = self.client.meta.set_attr(self.path, **changes)
            self._cache = None

    def truncate(self, length: int) -> None:
        with self.lock:
            if length == self.length:
                return
            if length > self.length:
                self.write(length - 1, b"\0")  # the last chunk must end at the length
                return
            self.commit()
            assert self.inode is not None
            self.inode = cut(self.client, self.path, self.inode, length)
            self.length = length

    def set_attrs(self, changes: dict[str, int]) -> mpb.Inode:
        """chmod/chown/utimens: now, or right after the open session's commit."""
        with self.lock:
            if self.session is not None:
                self.pending.update(changes)
                return self.view()
            self.inode = self.client.meta.set_attr(self.path, **changes)
            return self.view()

    def abandon(self) -> None:
        """The path was removed or replaced: commit nothing from now on; open handles keep reading
        what is committed and what is still unwritten (bytes already sent to a session that is
        now abandoned are gone, so reads then fail instead of returning zeros)."""
        with self.lock:
            self.unlinked = True
            self._cache = None
            if self.session is not None:
                written = self.replacing and self.dirty.bytes < self.length  # some went to storage
                self._drain_quietly()
                self._lost = written
                try:
                    self._end_session(commit=False)
                except OSError as exc:
                    log.debug("abandoning the session of %s: %s", self.path, exc)

    def refresh(self, inode: mpb.Inode) -> None:
        """A new open of a file nobody here is changing: take the committed inode (close-to-open)."""
        with self.lock:
            if not self.busy:
                changed = self.inode is None or (inode.id, inode.length, inode.mtime_ns) != (
                    self.inode.id, self.inode.length, self.inode.mtime_ns)
                self.inode, self.length = inode, inode.length
                if changed:
                    self._cache = None
                    self.dirty = DirtyMap(inode.layout.chunk_size)

    def _drain_quietly(self) -> None:
        for fut in self._in_flight.values():
            fut.cancel()
        for fut in self._in_flight.values():
            if not fut.cancelled():
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - the data is being dropped anyway
                    pass
        self._in_flight.clear()

    def _drop_dirty(self) -> None:
        self._drain_quietly()
        self.dirty = DirtyMap(self.dirty.cs)
        self._cache = None


def carried_attrs(inode: mpb.Inode) -> dict[str, int]:
    """What an O_TRUNC keeps of the file it empties: permission bits and owner."""
    kept = {"mode": inode.mode} if inode.mode else {}
    kept.update({name: getattr(inode, name) for name in ("uid", "gid") if inode.HasField(name)})
    return kept
