"""The replicated metadata backend: the same keys as `store.py`, kept in an etcd v3 cluster.

Why etcd: several stateless metaservers can then serve one namespace, and losing any one of them
(or a minority of etcd members) loses nothing; consensus is etcd's, not ours.

Layout: `<prefix>/ns/<key>` holds the namespace (inodes, dentries, sessions, GC records, the inode
counter) and `<prefix>/cluster/<key>` the cluster tables (nodes, targets, chains, their
counters, the routing version); `<prefix>/leader` is the manager election (see `election.py`).
Each open write session also has a marker key `L<session key>` attached to an etcd lease (one per
batch of opens, TTL the session lease, kept alive by RenewSession): when etcd lets it lapse, the
session is expired whatever the metaservers' clocks say.

Transactions are optimistic. An `EtcdTxn` pins the revision of its first read and reads everything
else at that revision (one snapshot), remembering each key's mod revision and each scanned range.
`commit` is ONE etcd Txn: compare every key read (mod revision unchanged, or still absent) and every
scanned range (nothing written since the snapshot), then apply every put and delete. A failed
compare raises `TxnConflict` and the operation reruns from the start (`retry_conflicts`), so the
result is serializable across metaservers. Inode ids come from per-metaserver blocks taken with a compare-and-swap on the counter, so creates do not all contend on one counter key.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator, Sequence

from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.etcd_client import (
    EtcdClient, delete_op, mod_equals, prefix_end, put_op, range_unchanged_since,
)
from chainfs.metaserver.store import (
    C_CHAIN, C_INODE, C_NODE, C_ROUTING, C_TARGET, P_CHAIN, P_DENTRY, P_LEASE, P_NODE, P_TARGET,
    ROOT_ID, Store, Txn, TxnConflict, counter_key, dentry_key, inode_key, u64,
)
from chainfs.proto import meta_pb2 as pb
from chainfs.proto import etcd_pb2 as epb

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/chainfs"
ID_BLOCK = 256  # inode ids a metaserver takes at a time (session ids are random)
PAGE = 1000  # keys per Range page of a scan
TXN_OPS = 128  # etcd's default --max-txn-ops: batched reads stay within it on any etcd
DENTRY_CACHE = 65536  # dentries a metaserver remembers for `resolve`
_CLUSTER_COUNTERS = {counter_key(c) for c in (C_NODE, C_TARGET, C_CHAIN, C_ROUTING)}
_CLUSTER_TABLES = (P_NODE, P_TARGET, P_CHAIN)
_BLOCK_COUNTERS = (C_INODE,)


class EtcdStore(Store):
    """Metadata in etcd under `prefix`; any number of EtcdStores may share one prefix."""

    backend = "etcd"

    def __init__(self, endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX, timeout: float = 5.0,
                 id_block: int = ID_BLOCK) -> None:
        if not prefix.startswith("/") or prefix.endswith("/") and prefix != "/":
            raise ValueError(f"etcd prefix must start with '/' and not end with one: {prefix!r}")
        self.client = EtcdClient(endpoints, timeout=timeout)
        self.prefix = prefix
        self.root = prefix.rstrip("/").encode() + b"/"
        self.path = f"etcd://{','.join(self.client.endpoints)}{prefix}"
        self.id_block = max(1, id_block)
        self._ids: dict[bytes, tuple[int, int]] = {}
        self._id_lock = threading.Lock()
        self._fence: epb.Compare | None = None
        self._dentries: dict[bytes, tuple[bytes, int]] = {}  # dentry key -> (child id, mod revision)
        self._fence_required = False  # set by the manager election; a lone store writes unfenced
        self._closed = False
        log.info("metadata store on %s", self.path)

    # ---- keys ----

    def ekey(self, key: bytes) -> bytes:
        if key[:1] in _CLUSTER_TABLES or key in _CLUSTER_COUNTERS:
            return self.root + b"cluster/" + key
        return self.root + b"ns/" + key

    def dkey(self, ekey: bytes) -> bytes:
        rest = ekey[len(self.root):]
        return rest.split(b"/", 1)[1]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("metadata store is closed")

    # ---- reads (latest committed state) ----

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        kv = self.client.get(self.ekey(key))
        return None if kv is None else kv.value

    def scan(self, prefix: bytes, start_after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        for kv in self._scan_kvs(prefix, start_after, revision=0, on_revision=None):
            yield self.dkey(kv.key), kv.value

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """One read-only etcd Txn of Range ops per TXN_OPS keys (one round trip, one revision)."""
        self._check_open()
        out: list[bytes | None] = []
        for i in range(0, len(keys), TXN_OPS):
            part = keys[i:i + TXN_OPS]
            ops = [epb.RequestOp(request_range=epb.RangeRequest(key=self.ekey(k))) for k in part]
            resp = self.client.txn([], ops, read_only=True)
            for r in resp.responses:
                kvs = r.response_range.kvs
                out.append(kvs[0].value if kvs else None)
        return out

    def reader(self) -> EtcdTxn:
        return EtcdTxn(self)

    # ---- the path cache: a stat in one round trip ----

    def remember_dentry(self, key: bytes, value: bytes | None, mod_revision: int) -> None:
        if value is None:
            self._dentries.pop(key, None)
            return
        if len(self._dentries) >= DENTRY_CACHE:
            self._dentries.clear()  # crude, but a stale entry costs one failed compare, never a wrong answer
        self._dentries[key] = (value, mod_revision)

    def resolve(self, parts: list[str]) -> pb.Inode | None:
        """The inode at `parts` when every dentry on the way is cached: ONE read-only etcd Txn that
        compares each of those dentries' mod revisions (unchanged: the path still leads there) and
        reads the last inode. Any miss or failed compare returns None (walk it; the walk refills)."""
        self._check_open()
        parent, compares = ROOT_ID, []
        for name in parts:
            key = dentry_key(parent, name)
            hit = self._dentries.get(key)
            if hit is None:
                return None
            compares.append(mod_equals(self.ekey(key), hit[1]))
            parent = int.from_bytes(hit[0], "big")
        op = epb.RequestOp(request_range=epb.RangeRequest(key=self.ekey(inode_key(parent))))
        resp = self.client.txn(compares, [op], read_only=True)
        kvs = resp.responses[0].response_range.kvs if resp.succeeded else None
        if not kvs:
            for name_key in [c.key for c in compares]:
                self._dentries.pop(self.dkey(name_key), None)
            return None
        return pb.Inode.FromString(kvs[0].value)

    def mutation_lock(self) -> _NoLock:
        return _NoLock()

    def _scan_kvs(self, prefix: bytes, start_after: bytes | None, revision: int,
                  on_revision: object) -> Iterator[epb.KeyValue]:
        """Every key under `prefix` after `start_after`, page by page at one revision."""
        self._check_open()
        start = self.ekey(start_after) + b"\0" if start_after is not None else self.ekey(prefix)
        end = prefix_end(self.ekey(prefix))
        while True:
            resp = self.client.range(start, end, revision=revision, limit=PAGE, serializable=bool(revision))
            if not revision:
                revision = resp.header.revision
                if callable(on_revision):
                    on_revision(revision)
            yield from resp.kvs
            if not resp.more or not resp.kvs:
                return
            start = resp.kvs[-1].key + b"\0"

    # ---- transactions ----

    def txn(self) -> EtcdTxn:
        self._check_open()
        return EtcdTxn(self)

    def require_fence(self) -> None:
        """From now on `commit(txn, fenced=True)` applies only while `fence_with` holds a compare."""
        self._fence_required = True

    def fence_with(self, compare: epb.Compare | None) -> None:
        """Guards `commit(txn, fenced=True)` (the cluster manager's writes) by the leader's key."""
        self._fence = compare

    def commit(self, txn: Txn, fenced: bool = False) -> None:
        if not txn.writes:
            return
        self._check_open()
        assert isinstance(txn, EtcdTxn)
        compares = [mod_equals(k, r) for k, r in txn.seen.items()]
        compares += [range_unchanged_since(s, e, txn.revision) for s, e in txn.ranges]
        if fenced and self._fence_required:
            fence = self._fence
            if fence is None:
                raise ChainfsError(Reason.UNAVAILABLE, "this metaserver is not the cluster manager")
            compares.append(fence)
        ops = [delete_op(self.ekey(k)) if v is None else put_op(self.ekey(k), v, txn.leases.get(k, 0))
               for k, v in txn.writes.items()]
        resp = self.client.txn(compares, ops)
        if not resp.succeeded:
            raise TxnConflict(f"{len(compares)} compares, {len(ops)} writes")
        for key, value in txn.writes.items():  # every put of one Txn carries its revision
            if key[:1] == P_DENTRY:
                self.remember_dentry(key, value, resp.header.revision)
        txn.writes.clear()

    def next_id(self, name: bytes, first: int) -> int:
        """A fresh id of counter `name`, from this store's block (a new block when it runs out)."""
        with self._id_lock:
            nxt, end = self._ids.get(name, (0, 0))
            if nxt >= end:
                nxt, end = self._take_block(name, first)
            self._ids[name] = (nxt + 1, end)
            return nxt

    def _take_block(self, name: bytes, first: int) -> tuple[int, int]:
        key = self.ekey(counter_key(name))
        for _ in range(100):
            kv = self.client.get(key)
            start = first if kv is None else int.from_bytes(kv.value, "big")
            end = start + self.id_block
            resp = self.client.txn([mod_equals(key, 0 if kv is None else kv.mod_revision)], [put_op(key, u64(end))])
            if resp.succeeded:
                return start, end
        raise ChainfsError(Reason.BUSY, f"could not allocate a block of {name.decode()} ids")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()
            log.info("metadata store closed: %s", self.path)


class _NoLock:
    """A context manager that excludes nothing (optimistic commits validate instead)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class EtcdTxn(Txn):
    """Reads at one snapshot revision and remembers them, so `commit` can validate them."""

    store: EtcdStore

    def __init__(self, store: EtcdStore) -> None:
        super().__init__(store)
        self.revision = 0
        self.seen: dict[bytes, int] = {}  # etcd key -> mod revision when read (0: absent)
        self.ranges: list[tuple[bytes, bytes]] = []
        self._cache: dict[bytes, bytes | None] = {}
        self.leases: dict[bytes, int] = {}  # key -> etcd lease id its put carries
        self._lease: tuple[int, int] | None = None  # (lease id, ttl s) granted for this txn

    def _pin(self, revision: int) -> None:
        self.revision = revision

    def _base_get(self, key: bytes) -> bytes | None:
        if key in self._cache:
            return self._cache[key]
        ekey = self.store.ekey(key)
        # The first read is linearizable and pins the snapshot; later ones read that revision from
        # the member's own store (serializable: no extra consensus round trip).
        resp = self.store.client.range(ekey, revision=self.revision, serializable=bool(self.revision))
        if not self.revision:
            self.revision = resp.header.revision
        kv = resp.kvs[0] if resp.kvs else None
        self.seen[ekey] = kv.mod_revision if kv is not None else 0
        value = kv.value if kv is not None else None
        if key[:1] == P_DENTRY:
            self.store.remember_dentry(key, value, kv.mod_revision if kv is not None else 0)
        self._cache[key] = value
        return value

    def _base_scan(self, prefix: bytes, start_after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        start = self.store.ekey(start_after) + b"\0" if start_after is not None else self.store.ekey(prefix)
        self.ranges.append((start, prefix_end(self.store.ekey(prefix))))
        for kv in self.store._scan_kvs(prefix, start_after, self.revision, self._pin):
            self.seen.setdefault(kv.key, kv.mod_revision)
            key = self.store.dkey(kv.key)
            self._cache.setdefault(key, kv.value)
            yield key, kv.value

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """The uncached keys in one read-only etcd Txn per TXN_OPS keys, at the snapshot."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._cache and k not in self.writes]
        for i in range(0, len(missing), TXN_OPS):
            part = missing[i:i + TXN_OPS]
            ops = [epb.RequestOp(request_range=epb.RangeRequest(key=self.store.ekey(k), revision=self.revision))
                   for k in part]
            resp = self.store.client.txn([], ops, read_only=True)
            if not self.revision:
                self.revision = resp.header.revision
            for key, r in zip(part, resp.responses):
                kvs = r.response_range.kvs
                self.seen[self.store.ekey(key)] = kvs[0].mod_revision if kvs else 0
                self._cache[key] = kvs[0].value if kvs else None
        return [self.get(k) for k in keys]

    def attach_lease(self, key: bytes, ttl_ns: int) -> None:
        ttl = max(1, -(-ttl_ns // 1_000_000_000))
        if self._lease is None or self._lease[1] != ttl:  # sessions opened in one batch share one
            self._lease = (self.store.client.grant(ttl), ttl)
        marker = P_LEASE + key
        self.put(marker, b"")
        self.leases[marker] = self._lease[0]

    def lease_alive(self, key: bytes) -> bool:
        return self.get(P_LEASE + key) is not None  # read through the txn: validated at commit

    def renew_lease(self, key: bytes) -> None:
        kv = self.store.client.get(self.store.ekey(P_LEASE + key))
        if kv is not None and kv.lease:
            self.store.client.keep_alive(kv.lease)

    def release_lease(self, key: bytes) -> None:
        self.delete(P_LEASE + key)

    def allocate(self, name: bytes, first: int = 1) -> int:
        if name in _BLOCK_COUNTERS:
            return self.store.next_id(name, first)
        return super().allocate(name, first)
