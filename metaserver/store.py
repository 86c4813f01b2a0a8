"""The metadata store interface, its key encoding, and the embedded backend: one RocksDB.

Two backends implement `Store`: `MetaStore` here (rocksdict, raw bytes; the default, one process)
and `EtcdStore` in `etcd_store.py` (a replicated etcd cluster shared by several metaservers). Both
hold the same keys below and hand out the same `Txn`; logic modules never see which one runs.

Why one keyspace with one-byte prefixes: a namespace operation touches inodes, dentries, sessions,
GC records and counters at once, and RocksDB makes a single WriteBatch atomic only within one DB.

Integers in keys are big-endian so byte order equals numeric order (prefix scans list in id order),
and dentry names follow the parent id so a directory listing is one prefix scan in name byte order.

Every change goes through a `Txn`: reads see the transaction's own pending writes (so one operation
can allocate an id, create parents and link an entry before anything is written), and `commit`
writes everything as ONE WriteBatch with sync=True, so a reply is only sent once the change is on
disk. The caller (Namespace, ClusterManager) serializes its transactions with its own lock.

With several metaservers that lock is not enough: the etcd backend validates at commit that nothing
the transaction read has changed and raises `TxnConflict` otherwise. So every mutating operation
must be safe to run again from the start: decorate it with `@retry_conflicts` (which reruns it on
`TxnConflict`), read everything through the txn, and commit only through `store.commit`.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import meta_pb2 as pb

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# ---- key encoding ----

P_INODE = b"I"    # I + u64 inode id              -> Inode
P_DENTRY = b"D"   # D + u64 parent id + name utf8  -> u64 child id
P_SESSION = b"S"  # S + 16-byte session id       -> SessionRecord (JSON)
P_GC = b"G"       # G + u64 inode id              -> GcRecord (JSON)
P_NODE = b"N"     # N + u32 node id               -> NodeInfo
P_TARGET = b"T"   # T + u32 target id             -> TargetInfo
P_CHAIN = b"C"    # C + u32 chain id              -> ChainInfo (targets hold only target ids, in order)
P_COUNTER = b"M"  # M + name                      -> u64
P_LEASE = b"L"    # L + a session key              -> b"" (etcd only: attached to the session's etcd lease)
P_REQUEST = b"R"  # R + request id utf8           -> RequestRecord (JSON): a mutation's first answer
P_REQUEST_AGE = b"Q"  # Q + u64 created ns + request id -> empty: request records in age order

# Counter names and their first value.
C_INODE = b"next_inode"
C_NODE = b"next_node"
C_TARGET = b"next_target"
C_CHAIN = b"next_chain"
C_ROUTING = b"routing_version"

ROOT_ID = 1


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def inode_key(inode_id: int) -> bytes:
    return P_INODE + u64(inode_id)


def dentry_prefix(parent_id: int) -> bytes:
    return P_DENTRY + u64(parent_id)


def dentry_key(parent_id: int, name: str) -> bytes:
    return dentry_prefix(parent_id) + name.encode("utf-8")


def session_key(session_id: str) -> bytes:
    """The key of a session id (32 hex digits, checked by `records.check_session_id`)."""
    return P_SESSION + bytes.fromhex(session_id)


def gc_key(inode_id: int) -> bytes:
    return P_GC + u64(inode_id)


def request_key(request_id: str) -> bytes:
    return P_REQUEST + request_id.encode("utf-8")


def request_age_key(created_ns: int, request_id: str) -> bytes:
    return P_REQUEST_AGE + u64(created_ns) + request_id.encode("utf-8")


def node_key(node_id: int) -> bytes:
    return P_NODE + u32(node_id)


def target_key(target_id: int) -> bytes:
    return P_TARGET + u32(target_id)


def chain_key(chain_id: int) -> bytes:
    return P_CHAIN + u32(chain_id)


def counter_key(name: bytes) -> bytes:
    return P_COUNTER + name


# ---- readers shared by the store and transactions ----


class Reader:
    """Typed accessors over `get` and `scan`, so the store and a transaction read alike."""

    def get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def scan(self, prefix: bytes, start_after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for keys starting with `prefix`, in byte order, after `start_after` (a full key)."""
        raise NotImplementedError

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """Several keys at once (a backend may fetch them in one round trip)."""
        return [self.get(k) for k in keys]

    def get_inode(self, inode_id: int) -> pb.Inode | None:
        raw = self.get(inode_key(inode_id))
        return None if raw is None else pb.Inode.FromString(raw)

    def get_inodes(self, inode_ids: list[int]) -> list[pb.Inode | None]:
        raws = self.get_many([inode_key(i) for i in inode_ids])
        return [None if raw is None else pb.Inode.FromString(raw) for raw in raws]

    def lookup(self, parent_id: int, name: str) -> int | None:
        raw = self.get(dentry_key(parent_id, name))
        return None if raw is None else int.from_bytes(raw, "big")

    def children(self, parent_id: int, start_after: str = "") -> Iterator[tuple[str, int]]:
        """(name, child id) of a directory in name byte order, after `start_after`."""
        prefix = dentry_prefix(parent_id)
        after = prefix + start_after.encode("utf-8") if start_after else None
        for key, value in self.scan(prefix, after):
            yield key[len(prefix):].decode("utf-8"), int.from_bytes(value, "big")

    def inodes(self) -> Iterator[pb.Inode]:
        """Every inode (a whole-table scan, for checks)."""
        for _, raw in self.scan(P_INODE):
            yield pb.Inode.FromString(raw)

    def dentries(self) -> Iterator[tuple[int, str, int]]:
        """(parent id, name, child id) of every directory entry (a whole-table scan, for checks)."""
        for key, value in self.scan(P_DENTRY):
            parent = key[len(P_DENTRY):len(P_DENTRY) + 8]
            yield (int.from_bytes(parent, "big"), key[len(P_DENTRY) + 8:].decode("utf-8", "replace"),
                   int.from_bytes(value, "big"))

    def has_children(self, parent_id: int) -> bool:
        return next(self.children(parent_id), None) is not None

    def counter(self, name: bytes, default: int) -> int:
        raw = self.get(counter_key(name))
        return default if raw is None else int.from_bytes(raw, "big")

    def values(self, prefix: bytes) -> Iterator[bytes]:
        for _, value in self.scan(prefix):
            yield value


# ---- the interface ----


class TxnConflict(Exception):
    """A transaction read something that another writer changed before it committed: run it again."""


CONFLICT_RETRIES = 64


def retry_conflicts(fn: F) -> F:
    """Reruns a whole mutating operation when its commit lost a race (etcd backend only; RocksDB
    transactions are serialized by the caller's lock and never conflict). Jittered backoff keeps
    metaservers racing for one hot key (a directory's mtime) from colliding in lockstep."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        delay = 0.001
        for _ in range(CONFLICT_RETRIES):
            try:
                return fn(*args, **kwargs)
            except TxnConflict:
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.05)
        raise ChainfsError(Reason.BUSY, f"{fn.__name__}: too much contention on the metadata store, try again")

    return wrapper  # type: ignore[return-value]


class Store(Reader):
    """What a metadata backend offers: reads, transactions, one atomic durable commit, close."""

    backend = "?"
    path = ""

    def txn(self) -> Txn:
        return Txn(self)

    def reader(self) -> Reader:
        """What a read-only operation (stat, list) reads through: the store itself where every
        read is cheap and each commit atomic (RocksDB), a snapshot where reads cost a round trip."""
        return self

    def resolve(self, parts: list[str]) -> pb.Inode | None:
        """A backend's shortcut for the inode at a path, or None to walk it (RocksDB: always walk;
        every read is local)."""
        return None

    def mutation_lock(self) -> Any:
        """The lock a namespace holds around each mutation: a real one where transactions are not
        validated at commit (RocksDB); the etcd backend's optimistic commits need none."""
        return threading.Lock()

    def commit(self, txn: Txn, fenced: bool = False) -> None:
        """Applies a transaction's writes atomically and durably; TxnConflict if it lost a race.

        `fenced`: only while this process holds the cluster manager's lease (see `election.py`)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the embedded backend ----


class MetaStore(Store):
    """RocksDB opened in raw mode; reads go straight to the DB, writes only through `commit`."""

    backend = "rocksdb"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db: Rdict | None = Rdict(self.path, options)
        self._write_options = WriteOptions()
        self._write_options.sync = True  # durable before the reply (survives SIGKILL and power loss)
        self._close_lock = threading.Lock()
        log.info("metadata store open at %s", self.path)

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError("metadata store is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, prefix: bytes, start_after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start_after if start_after is not None else prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            if start_after is None or key > start_after:
                yield key, it.value()
            it.next()

    def commit(self, txn: Txn, fenced: bool = False) -> None:
        """Writes a transaction's changes as one synced WriteBatch (nothing if it changed nothing).
        One process owns the DB, so it is always the manager: `fenced` changes nothing here."""
        if not txn.writes:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in txn.writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch, self._write_options)
        txn.writes.clear()

    def close(self) -> None:
        with self._close_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                log.info("metadata store closed: %s", self.path)


class Txn(Reader):
    """Pending writes over a store; reads see them. Commit with `Store.commit`.

    Reads of the underlying store go through `_base_get` / `_base_scan`, which a backend's own
    Txn overrides to pin a snapshot and remember what was read (for validation at commit)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: dict[bytes, bytes | None] = {}  # None = delete

    def _base_get(self, key: bytes) -> bytes | None:
        return self.store.get(key)

    def _base_scan(self, prefix: bytes, start_after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        return self.store.scan(prefix, start_after)

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self._base_get(key)

    def scan(self, prefix: bytes, start_after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        pending = sorted(
            k for k in self.writes if k.startswith(prefix) and (start_after is None or k > start_after)
        )
        i = 0
        for key, value in self._base_scan(prefix, start_after):
            while i < len(pending) and pending[i] < key:
                if self.writes[pending[i]] is not None:
                    yield pending[i], self.writes[pending[i]]  # type: ignore[misc]
                i += 1
            if i < len(pending) and pending[i] == key:
                i += 1
                if self.writes[key] is not None:
                    yield key, self.writes[key]  # type: ignore[misc]
                continue
            yield key, value
        for key in pending[i:]:
            if self.writes[key] is not None:
                yield key, self.writes[key]  # type: ignore[misc]

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    # write-session leases: on etcd a marker key attached to an etcd lease, so that etcd's clock (one
    # for every metaserver) decides expiry; here the session record's own expiry time is the lease

    def attach_lease(self, key: bytes, ttl_ns: int) -> None:
        """Ties `key`'s lifetime to a lease of `ttl_ns` (renewed by `renew_lease`)."""

    def lease_alive(self, key: bytes) -> bool:
        return True

    def renew_lease(self, key: bytes) -> None:
        """Extends the lease of `key` by its TTL from now."""

    def release_lease(self, key: bytes) -> None:
        """`key` no longer needs its lease (its session closed or expired)."""

    # typed writers

    def put_inode(self, inode: pb.Inode) -> None:
        self.put(inode_key(inode.id), inode.SerializeToString())

    def delete_inode(self, inode_id: int) -> None:
        self.delete(inode_key(inode_id))

    def link(self, parent_id: int, name: str, child_id: int) -> None:
        self.put(dentry_key(parent_id, name), u64(child_id))

    def unlink(self, parent_id: int, name: str) -> None:
        self.delete(dentry_key(parent_id, name))

    def set_counter(self, name: bytes, value: int) -> None:
        self.put(counter_key(name), u64(value))

    def allocate(self, name: bytes, first: int = 1) -> int:
        """The next id of a counter; the bumped counter is written in this same transaction."""
        value = self.counter(name, first)
        self.set_counter(name, value + 1)
        return value

    def claim(self, name: bytes, wanted: int = 0) -> int:
        """`wanted` when given (a registering node's saved id; reserved, so the counter never hands
        it out again), otherwise the counter's next id."""
        if wanted:
            self.reserve(name, wanted)
            return wanted
        return self.allocate(name)

    def reserve(self, name: bytes, used: int) -> None:
        """Makes sure a counter never hands out `used` (an id that came from elsewhere)."""
        if self.counter(name, 1) <= used:
            self.set_counter(name, used + 1)
