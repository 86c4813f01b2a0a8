"""The chunk engine of one target (a data directory): chunk metadata in RocksDB, data in files.

Layout of a target directory::

    meta/                                    RocksDB (raw mode): key = inode u64 BE + index u32 BE,
                                             value = StoredChunk (ChunkMeta + recent request ids)
    chunks/<inode % 256 as 2 hex>/<inode:016x>-<index:08x>.v<version>

Every committed version lives in its own file (copy-on-write): an update is staged as a new file
`.v<pending>` and becomes visible through one synced metadata batch, after which the previous
version's file is unlinked. A reader that opened the old file keeps reading it (POSIX semantics);
a reader that raced the unlink re-reads the metadata and retries.

The one exception is a forwarded write that re-uses the version this replica has already committed
(the head aborted a write after this replica had committed it, then assigned the same version to
the next write). Its data is staged as `.v<version>.new` and renamed over the committed file right
after the commit batch; readers are kept consistent by a swap epoch, and startup recovery finishes
an interrupted rename (when the staged file's CRC matches the committed metadata) or drops it.

Callers (replication) serialize all mutations of one chunk with a per-chunk lock; the store itself
only guarantees that every single operation leaves disk and metadata consistent, even after a crash.
File names are built only from validated integers, so nothing outside the target dir can be named.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from pathlib import Path
from typing import BinaryIO

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from chainfs.common import config
from chainfs.common.checksum import block_crcs, crc32c
from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import storage_pb2
from chainfs.storageserver.chunk_files import DataSource, Staging, fsync_dir, unlink, write_file
from chainfs.storageserver.chunk_ids import MAX_INDEX, MAX_VERSION, ChunkKey, chunk_key

log = logging.getLogger(__name__)

RECENT_REQUESTS = 32
_FILE_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{8})\.v([0-9]{1,20})(\.new)?$")


def _validate_version(version: int) -> None:
    if not isinstance(version, int) or not 0 < version <= MAX_VERSION:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"invalid chunk version {version}")


class ChunkStore:
    """Chunk metadata and data of one target. Thread-safe per operation; see module docstring."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self._chunks = self.root / "chunks"
        self._chunks.mkdir(parents=True, exist_ok=True)
        for shard in range(256):
            (self._chunks / f"{shard:02x}").mkdir(exist_ok=True)
        if fsync:
            fsync_dir(self._chunks)
            fsync_dir(self.root)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_keep_log_file_num(2)
        opts.set_max_background_jobs(2)
        opts.set_write_buffer_size(8 << 20)
        self._db = Rdict(str(self.root / "meta"), opts)
        self._sync = WriteOptions()
        self._sync.sync = fsync
        self._cond = threading.Condition()
        self._swapping: set[ChunkKey] = set()
        self._epoch = 0  # bumped around every same-name file swap and every removal
        self._closed = False
        self._recover()

    # ---- paths ----

    def _file(self, key: ChunkKey, version: int, *, new: bool = False) -> Path:
        inode, index = chunk_key(key.inode, key.index)
        _validate_version(version)
        name = f"{inode:016x}-{index:08x}.v{version:d}" + (".new" if new else "")
        return self._chunks / f"{inode % 256:02x}" / name

    def chunk_path(self, key: ChunkKey, version: int) -> Path:
        """The file of a committed version."""
        return self._file(key, version)

    # ---- metadata ----

    def get_record(self, key: ChunkKey) -> storage_pb2.StoredChunk | None:
        raw = self._db.get(chunk_key(key.inode, key.index).encode())
        if raw is None:
            return None
        return storage_pb2.StoredChunk.FromString(raw)

    def get_meta(self, key: ChunkKey) -> storage_pb2.ChunkMeta | None:
        """The chunk's metadata (committed and pending version), or None when it has no record."""
        record = self.get_record(key)
        return None if record is None else record.meta

    def _write(self, puts: dict[ChunkKey, storage_pb2.StoredChunk], deletes: tuple[ChunkKey, ...] = (),
               *, sync: bool = True) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, record in puts.items():
            batch.put(key.encode(), record.SerializeToString())
        for key in deletes:
            batch.delete(key.encode())
        if sync:
            self._db.write(batch, self._sync)
        else:
            self._db.write(batch)

    # ---- writes (callers hold the chunk's lock) ----

    def _replace_pending(self, key: ChunkKey, version: int) -> storage_pb2.StoredChunk:
        """The chunk's record with any older pending version's files dropped and `version` pending
        (not yet written back)."""
        _validate_version(version)
        record = self.get_record(key) or storage_pb2.StoredChunk(
            meta=storage_pb2.ChunkMeta(chunk=key.to_proto())
        )
        if record.meta.pending_version:
            self._drop_pending_files(key, record.meta)
        record.meta.pending_version = version
        del record.pending_block_crcs[:]
        return record

    def mark_pending(self, key: ChunkKey, version: int) -> None:
        """Records `version` as pending before its data is here, so reads answer PENDING at once.

        Any older pending version is discarded. Not synced: after a crash pending versions go.
        """
        key = chunk_key(key.inode, key.index)
        self._write({key: self._replace_pending(key, version)}, sync=False)

    def stage(self, key: ChunkKey, version: int, data: DataSource) -> int:
        """Writes `data` as pending `version` of the chunk (fsynced) and records it; returns its size.

        Any older pending version is discarded first. The committed version stays readable.
        """
        key = chunk_key(key.inode, key.index)
        record = self._replace_pending(key, version)
        size = write_file(self._file(key, version, new=version == record.meta.version), data, fsync=self.fsync)
        if isinstance(data, (bytes, bytearray, memoryview)):
            record.pending_block_crcs.extend(block_crcs(data))
        # Not synced: after a crash any pending version is discarded anyway.
        self._write({key: record}, sync=False)
        return size

    def open_staging(self, key: ChunkKey, version: int, length: int) -> Staging:
        """A pending version's file, sized and mapped, for the data to be received straight into
        the page cache (one copy fewer than receiving into a buffer and writing it). The caller
        fills `view`, then `finish()`es (fsync, record) or `discard()`s it, and always `close()`s."""
        key = chunk_key(key.inode, key.index)
        _validate_version(version)
        if not 0 <= length <= config.MAX_CHUNK_SIZE:
            raise ChainfsError(Reason.TOO_LARGE, f"chunk data of {length} bytes exceeds the maximum")
        record = self.get_record(key)
        same_name = record is not None and version == record.meta.version
        return Staging(key, version, self._file(key, version, new=same_name), length, fsync=self.fsync)

    def finish_staging(self, staging: Staging) -> None:
        """Makes a filled staged file durable and records its block CRCs with the pending version."""
        staging.sync()
        record = self.get_record(staging.key)
        if record is None or record.meta.pending_version != staging.version:
            raise ChainfsError(Reason.INTERNAL, f"{staging.key}: version {staging.version} is no longer pending")
        del record.pending_block_crcs[:]
        record.pending_block_crcs.extend(block_crcs(staging.view))
        self._write({staging.key: record}, sync=False)  # pending versions do not survive a crash anyway

    def commit(self, key: ChunkKey, version: int, length: int, crc: int, chain_version: int,
               request_id: str = "") -> storage_pb2.ChunkMeta:
        """Makes pending `version` the committed one in one synced batch; unlinks the old file."""
        key = chunk_key(key.inode, key.index)
        record = self.get_record(key)
        if record is None or record.meta.pending_version != version:
            pending = 0 if record is None else record.meta.pending_version
            raise ChainfsError(Reason.INTERNAL, f"commit of version {version} but pending is {pending}")
        old = record.meta.version
        record.meta.version = version
        record.meta.pending_version = 0
        record.meta.chain_version = chain_version
        record.meta.length = length
        record.meta.crc = crc
        del record.meta.block_crcs[:]
        record.meta.block_crcs.extend(record.pending_block_crcs)
        del record.pending_block_crcs[:]
        if request_id:
            record.recent_requests.append(request_id)
            if len(record.recent_requests) > RECENT_REQUESTS:
                del record.recent_requests[: len(record.recent_requests) - RECENT_REQUESTS]
        if old == version:
            self._swap_in(key, version, record)
        else:
            self._write({key: record})
            if old:
                unlink(self.chunk_path(key, old))
        meta = storage_pb2.ChunkMeta()
        meta.CopyFrom(record.meta)
        return meta

    def _swap_in(self, key: ChunkKey, version: int, record: storage_pb2.StoredChunk) -> None:
        """Same file name: writes `record` and renames the staged `.new` file of `version` over the
        committed one while readers are held off (startup recovery finishes an interrupted one)."""
        with self._swap(key):
            self._write({key: record})
            os.replace(self._file(key, version, new=True), self.chunk_path(key, version))
            if self.fsync:
                fsync_dir(self.chunk_path(key, version).parent)

    def replace_committed(self, key: ChunkKey, version: int, data: bytes | bytearray | memoryview
                          ) -> storage_pb2.ChunkMeta:
        """Rewrites the file of committed `version` with `data`, a verified copy from another
        replica (repair of a rotten, truncated or deleted file). The data must match the committed
        metadata's length and CRC32C; block CRCs are recomputed from it. Callers hold the chunk's
        lock; a chunk whose version moved, or whose pending update reuses this version's file
        name, is BUSY (try again later)."""
        key = chunk_key(key.inode, key.index)
        _validate_version(version)
        record = self.get_record(key)
        if record is None or record.meta.version != version or record.meta.pending_version == version:
            raise ChainfsError(Reason.BUSY, f"chunk {key} is no longer at committed version {version}")
        if len(data) != record.meta.length or crc32c(data) != record.meta.crc:
            raise ChainfsError(Reason.CHECKSUM_MISMATCH, f"replacement of chunk {key} does not match its metadata")
        write_file(self._file(key, version, new=True), data, fsync=self.fsync)
        del record.meta.block_crcs[:]
        record.meta.block_crcs.extend(block_crcs(data))
        self._swap_in(key, version, record)
        meta = storage_pb2.ChunkMeta()
        meta.CopyFrom(record.meta)
        return meta

    def abort_pending(self, key: ChunkKey) -> bool:
        """Discards the pending version, if any; returns whether there was one."""
        key = chunk_key(key.inode, key.index)
        record = self.get_record(key)
        if record is None or not record.meta.pending_version:
            return False
        self._drop_pending_files(key, record.meta)
        record.meta.pending_version = 0
        del record.pending_block_crcs[:]
        if record.meta.version == 0 and not record.recent_requests:
            self._write({}, (key,), sync=False)
        else:
            self._write({key: record}, sync=False)
        return True

    def _drop_pending_files(self, key: ChunkKey, meta: storage_pb2.ChunkMeta) -> None:
        pending = meta.pending_version
        unlink(self._file(key, pending, new=True))
        if pending != meta.version:
            unlink(self.chunk_path(key, pending))

    def remove(self, key: ChunkKey) -> bool:
        """Deletes the chunk (metadata first, then its files); returns whether it existed."""
        key = chunk_key(key.inode, key.index)
        record = self.get_record(key)
        if record is None:
            return False
        with self._swap(key):
            self._write({}, (key,))
            if record.meta.version:
                unlink(self.chunk_path(key, record.meta.version))
            if record.meta.pending_version:
                self._drop_pending_files(key, record.meta)
        return record.meta.version != 0

    # ---- reads ----

    def open_committed(self, key: ChunkKey) -> tuple[storage_pb2.ChunkMeta, BinaryIO] | None:
        """The committed metadata and an open file of exactly that version, or None (no chunk).

        Robust against a concurrent commit or removal: the pair returned always belongs together.
        """
        key = chunk_key(key.inode, key.index)
        for _ in range(1000):
            epoch = self._wait_not_swapping(key)
            meta = self.get_meta(key)
            if meta is None or meta.version == 0:
                return None
            try:
                f: BinaryIO = open(self.chunk_path(key, meta.version), "rb")  # noqa: SIM115
            except FileNotFoundError:
                again = self.get_meta(key)
                if again is not None and again.version == meta.version and self._epoch == epoch:
                    raise ChainfsError(
                        Reason.IO_ERROR, f"file of committed version {meta.version} of {key} is missing"
                    ) from None
                continue  # a commit or removal moved on: re-read the metadata
            if self._epoch != epoch:
                f.close()
                continue
            return meta, f
        raise ChainfsError(Reason.BUSY, f"chunk {key} keeps changing under the reader")

    def read_committed(self, key: ChunkKey, offset: int = 0,
                       length: int | None = None) -> tuple[storage_pb2.ChunkMeta, bytes] | None:
        """Committed bytes [offset, offset+length) clipped to the chunk's length, with its meta."""
        opened = self.open_committed(key)
        if opened is None:
            return None
        meta, f = opened
        with f:
            start = min(offset, meta.length)
            end = meta.length if length is None else min(offset + length, meta.length)
            f.seek(start)
            data = f.read(max(0, end - start))
        if len(data) != max(0, end - start):
            raise ChainfsError(Reason.IO_ERROR, f"chunk {key} file is shorter than its metadata says")
        return meta, data

    def list_chunks(self, inode: int = 0, start_after: ChunkKey | None = None,
                    limit: int = config.DEFAULT_LIST_LIMIT) -> tuple[list[storage_pb2.ChunkMeta], bool]:
        """Committed chunks in (inode, index) order: of one inode, or all when inode is 0."""
        limit = max(1, min(limit or config.DEFAULT_LIST_LIMIT, config.MAX_LIST_LIMIT))
        out: list[storage_pb2.ChunkMeta] = []
        more = False
        for key, record in self._scan(inode, start_after):
            if record.meta.version == 0:
                continue
            if len(out) == limit:
                more = True
                break
            out.append(record.meta)
        return out, more

    def list_keys(self, inode: int, from_index: int = 0) -> list[ChunkKey]:
        """Every chunk record of an inode with index >= from_index (pending-only ones included)."""
        chunk_key(inode, 0)
        start = ChunkKey(inode, from_index - 1) if from_index > 0 else None
        return [key for key, _ in self._scan(inode, start)]

    def _scan(self, inode: int, start_after: ChunkKey | None):  # type: ignore[no-untyped-def]
        if inode:
            chunk_key(inode, 0)
        prefix = struct.pack(">Q", inode) if inode else b""
        it = self._db.iter()
        try:
            if start_after is not None and start_after.encode() >= prefix:
                it.seek(start_after.encode())
                if it.valid() and it.key() == start_after.encode():
                    it.next()
            elif prefix:
                it.seek(prefix)
            else:
                it.seek_to_first()
            while it.valid():
                raw = it.key()
                if prefix and not raw.startswith(prefix):
                    break
                if len(raw) == 12:
                    yield ChunkKey.decode(raw), storage_pb2.StoredChunk.FromString(it.value())
                it.next()
        finally:
            del it

    # ---- readers vs. same-name swaps ----

    def _wait_not_swapping(self, key: ChunkKey) -> int:
        with self._cond:
            while key in self._swapping:
                self._cond.wait(1.0)
            return self._epoch

    class _SwapGuard:
        def __init__(self, store: "ChunkStore", key: ChunkKey) -> None:
            self.store, self.key = store, key

        def __enter__(self) -> None:
            with self.store._cond:
                self.store._swapping.add(self.key)
                self.store._epoch += 1

        def __exit__(self, *exc: object) -> None:
            with self.store._cond:
                self.store._swapping.discard(self.key)
                self.store._epoch += 1
                self.store._cond.notify_all()

    def _swap(self, key: ChunkKey) -> "ChunkStore._SwapGuard":
        return ChunkStore._SwapGuard(self, key)

    # ---- recovery ----

    def _recover(self) -> None:
        """Discards pending versions left by a crash and deletes files no metadata refers to."""
        fixed: dict[ChunkKey, storage_pb2.StoredChunk] = {}
        dropped: list[ChunkKey] = []
        for key, record in self._scan(0, None):
            if record.meta.pending_version:
                log.info("%s: discarding pending version %d of %s", self.root, record.meta.pending_version, key)
                self._drop_pending_files(key, record.meta)
                record.meta.pending_version = 0
                if record.meta.version == 0 and not record.recent_requests:
                    dropped.append(key)
                else:
                    fixed[key] = record
        if fixed or dropped:
            self._write(fixed, tuple(dropped))
        strays = 0
        for shard in sorted(self._chunks.iterdir()):
            if not shard.is_dir():
                continue
            for path in shard.iterdir():
                match = _FILE_RE.match(path.name)
                if match is None:
                    log.warning("%s: unknown file %s left alone", self.root, path)
                    continue
                inode, index, version = int(match[1], 16), int(match[2], 16), int(match[3])
                if inode == 0 or index > MAX_INDEX or version == 0 or f"{inode % 256:02x}" != shard.name:
                    log.warning("%s: unexpected chunk file %s left alone", self.root, path)
                    continue
                key = ChunkKey(inode, index)
                meta = self.get_meta(key)
                if match[4]:
                    if meta is not None and meta.version == version and self._file_matches(path, meta):
                        log.info("%s: finishing the interrupted commit of %s", self.root, path.name)
                        os.replace(path, self.chunk_path(key, version))
                        continue
                elif meta is not None and meta.version == version:
                    continue
                strays += 1
                unlink(path)
        if strays:
            log.info("%s: deleted %d stray chunk files", self.root, strays)
        if self.fsync and strays:
            fsync_dir(self._chunks)

    @staticmethod
    def _file_matches(path: Path, meta: storage_pb2.ChunkMeta) -> bool:
        try:
            data = path.read_bytes()
        except OSError:
            return False
        return len(data) == meta.length and crc32c(data) == meta.crc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
