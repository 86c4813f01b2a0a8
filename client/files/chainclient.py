"""ChainClient: whole-file operations over the metadata and storage RPC layers.

The fsspec filesystem builds on it, and through it the CLI, the FUSE mount and the KV cache.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import Future
from typing import BinaryIO, Iterator, Mapping, Sequence

from chainfs.common import config
from chainfs.common.tls import TlsArg
from chainfs.proto import meta_pb2 as mpb

from chainfs.client.rpc.meta_client import MetaClient, RoutingCache
from chainfs.client.rpc.placement import chain_of, chunk_ranges
from chainfs.client.rpc.pools import EXECUTOR
from chainfs.client.rpc.storage_client import ReadSpec, StorageClient
from chainfs.client.files.writer import ChunkWriter

READ_ROUND_BYTES = 64 * config.MiB  # bytes per batched read round (bounds one round's memory and time)


class ChainClient:
    """A client of one chainfs cluster, named by its metaserver address."""

    def __init__(self, address: str, meta_timeout: float = config.META_RPC_TIMEOUT,
                 retry_deadline: float = 60.0, short_circuit: bool = True, tls: TlsArg = None,
                 token: str | None = None) -> None:
        self.address = address
        # tls: a TlsConfig, a directory (ca.pem, client.pem, client.key) or False; None looks for
        # one as credentials are looked for (common/tls.resolve).
        # token: this cluster's token; None looks for one (common/auth.resolve: $CHAINFS_TOKEN_FILE,
        # then ~/.config/chainfs/credentials).
        self.meta = MetaClient(address, timeout=meta_timeout, retry_deadline=min(retry_deadline, 30.0), tls=tls,
                               token=token)
        self.routing = RoutingCache(self.meta)
        # short_circuit: read committed chunk files of replicas on this machine directly.
        self.storage = StorageClient(self.routing, retry_deadline=retry_deadline, short_circuit=short_circuit)
        self._client_id = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ---- namespace ----

    def stat(self, path: str) -> mpb.Inode:
        return self.meta.stat(path)

    def ls(self, path: str) -> list[mpb.DirEntry]:
        return list(self.meta.list(path))

    def mkdir(self, path: str, parents: bool = False, layout: mpb.Layout | None = None) -> mpb.Inode:
        """Creates a directory; `layout` sets the defaults its new files inherit."""
        return self.meta.mkdir(path, parents=parents, layout=layout)

    def rm(self, path: str, recursive: bool = False) -> None:
        self.meta.remove(path, recursive=recursive)

    def rename(self, src: str, dst: str) -> None:
        self.meta.rename(src, dst)

    # ---- writing ----

    def open_writer(self, path: str, mode: int = mpb.REPLACE, parents: bool = True,
                    layout: mpb.Layout | None = None) -> ChunkWriter:
        session = self.meta.open_write(path, mode, self._client_id, parents=parents, layout=layout)
        return ChunkWriter(self.meta, self.storage, session)

    def write_file(self, path: str, source: bytes | bytearray | memoryview | BinaryIO,
                   mode: int = mpb.REPLACE, layout: mpb.Layout | None = None) -> mpb.Inode:
        """Writes a whole file; it becomes visible at once when every chunk is committed."""
        with self.open_writer(path, mode, layout=layout) as writer:
            if isinstance(source, (bytes, bytearray, memoryview)):
                writer.write(source)
            else:
                while block := source.read(writer.chunk_size):
                    writer.write(block)
            return writer.close()

    def write_files(self, files: Mapping[str, bytes | bytearray | memoryview], mode: int = mpb.REPLACE,
                    layout: mpb.Layout | None = None) -> list[mpb.Inode | Exception]:
        """Writes many whole files with one OpenWriteMany and one CloseWriteMany call (per
        config.MAX_BATCH files): every chunk of every file is written in parallel in between, and
        each file appears whole at the close (a file whose chunks failed is abandoned, not shown).
        Returns each file's inode or its exception, in the mapping's order."""
        paths = list(files)
        results: list[mpb.Inode | Exception] = list(
            self.meta.open_write_many(paths, mode, self._client_id, parents=True, layout=layout))
        writes: list[tuple[int, Future]] = []
        pool = EXECUTOR.get()
        for k, session in enumerate(results):
            if isinstance(session, Exception):
                continue
            data, inode = memoryview(files[paths[k]]).cast("B"), session.inode
            for r in chunk_ranges(0, len(data), inode.layout.chunk_size):
                writes.append((k, pool.submit(self.storage.write_chunk, chain_of(inode.layout, r.index), inode.id,
                                              r.index, data[r.file_offset:r.file_offset + r.length],
                                              inode.layout.chunk_size, 0, True)))
        failed: dict[int, Exception] = {}
        for k, fut in writes:
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - that file is abandoned; the others go on
                failed.setdefault(k, exc)
        opened = [k for k, s in enumerate(results) if not isinstance(s, Exception)]
        closes = [(results[k].session_id, len(files[paths[k]]), k not in failed) for k in opened]  # type: ignore[union-attr]
        closed = self.meta.close_write_many(closes, [paths[k] for k in opened]) if closes else []
        for k, inode in zip(opened, closed):
            results[k] = failed.get(k, inode)
        return results

    # ---- reading ----

    def stat_many(self, paths: Sequence[str]) -> list[mpb.Inode | Exception]:
        """One metadata round trip (per config.MAX_BATCH paths): each inode or its exception."""
        return self.meta.stat_many(paths)

    def read_file(self, path: str, offset: int = 0, length: int | None = None,
                  replica: int | None = None) -> bytes:
        inode = self.stat(path)
        end = inode.length if length is None else min(inode.length, offset + max(0, length))
        buffer = bytearray(max(0, end - offset))
        n = self.read_inode_into(inode, buffer, offset, replica=replica, path=path)
        return bytes(memoryview(buffer)[:n])

    def read_into(self, path: str, buffer: bytearray | memoryview, offset: int = 0) -> int:
        """Fills `buffer` with the file's bytes from `offset`; returns how many (fewer at the end
        of the file). The bytes land in place: no intermediate copies or joins."""
        return self.read_inode_into(self.stat(path), buffer, offset, path=path)

    def read_inode_into(self, inode: mpb.Inode, buffer: bytearray | memoryview, offset: int = 0,
                        replica: int | None = None, path: str | None = None) -> int:
        if inode.type == mpb.DIRECTORY:
            raise IsADirectoryError(21, "is a directory", path)
        if offset < 0:
            raise ValueError(f"negative offset: {offset}")
        view = memoryview(buffer).cast("B")
        end = min(inode.length, offset + len(view))
        if end <= offset:
            return 0
        self.read_ranges_into([(inode, offset, end, view[:end - offset])], replica=replica)
        return end - offset

    def iter_read(self, inode: mpb.Inode, offset: int = 0, length: int | None = None,
                  replica: int | None = None, path: str | None = None) -> Iterator[bytes]:
        """Yields the file's bytes in order, one batched read round (READ_ROUND_BYTES) at a time."""
        end = inode.length if length is None else min(inode.length, offset + max(0, length))
        for start in range(offset, end, READ_ROUND_BYTES):
            buffer = bytearray(min(end, start + READ_ROUND_BYTES) - start)
            self.read_inode_into(inode, buffer, start, replica=replica, path=path)
            yield bytes(buffer)

    def read_ranges(self, items: list[tuple[mpb.Inode, int, int]], holes: set[int] | None = None,
                    replica: int | None = None) -> list[bytes]:
        """Reads [start, end) of each inode; the chunks of all items share batched read rounds.

        Items that met a missing chunk (read as zeros) are added to `holes`.
        """
        buffers = [bytearray(max(0, end - start)) for _, start, end in items]
        self.read_ranges_into([(inode, start, end, memoryview(buf)) for (inode, start, end), buf
                               in zip(items, buffers)], holes, replica)
        return [bytes(b) for b in buffers]

    def read_ranges_into(self, items: list[tuple[mpb.Inode, int, int, memoryview]],
                         holes: set[int] | None = None, replica: int | None = None) -> None:
        """Like `read_ranges`, each item's bytes landing in its own view (end - start bytes)."""
        specs: list[ReadSpec] = []
        views: list[memoryview] = []
        owners: list[int] = []
        size = 0

        def flush() -> None:
            nonlocal size
            missing: set[int] = set()
            self.storage.read_into(specs, views, missing)
            if holes is not None:
                holes.update(owners[i] for i in missing)
            specs.clear()
            views.clear()
            owners.clear()
            size = 0

        for k, (inode, start, end, view) in enumerate(items):
            for r in chunk_ranges(start, end - start, inode.layout.chunk_size) if end > start else ():
                specs.append(ReadSpec(chain_of(inode.layout, r.index), inode.id, r.index, r.offset, r.length,
                                      replica))
                at = r.index * inode.layout.chunk_size + r.offset - start
                views.append(view[at:at + r.length])
                owners.append(k)
                size += r.length
                if size >= READ_ROUND_BYTES:
                    flush()
        if specs:
            flush()
