"""The metadata RPC layer: namespace and routing calls with deadlines, retries and the error table."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Sequence, TypeVar

import grpc

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason, make_exception, to_exception
from chainfs.common.paths import checked_path
from chainfs.common.retry import RequestIds, call_with_retry
from chainfs.common.rpc import ChannelPool
from chainfs.common import auth
from chainfs.common.tls import TlsArg, register as register_tls, resolve as resolve_tls
from chainfs.proto import meta_pb2 as pb
from chainfs.proto import meta_pb2_grpc as pb_grpc

from chainfs.client.rpc.grants import CapabilityCache

T = TypeVar("T")

# One pool per process: every client of the same metaserver shares its channel.
CHANNELS = ChannelPool()


def split_addresses(address: str) -> list[str]:
    """'h1:p1,h2:p2' -> ['h1:p1', 'h2:p2'] (one cluster's metaservers, in the order to try)."""
    items = [a.strip() for a in address.split(",") if a.strip()]
    if not items:
        raise ValueError(f"no metaserver address in {address!r}")
    return items


class MetaClient:
    """Calls the metaservers. Failures surface as built-in exceptions naming the path.

    `address` may list several metaservers of one cluster ("h1:p1,h2:p2"): calls go to one of them
    and move to the next when it is unreachable, times out, or is a standby refusing a cluster
    manager call (all UNAVAILABLE / TIMEOUT, retried within the deadline)."""

    def __init__(self, address: str, timeout: float = config.META_RPC_TIMEOUT,
                 retry_deadline: float = 30.0, tls: TlsArg = None,
                 token: auth.TokenArg = None) -> None:
        self.address = address
        self.addresses = split_addresses(address)
        # TLS as found for this cluster (common/tls.resolve); its storage nodes get the same.
        self.tls = resolve_tls(address, tls)
        register_tls(self.addresses, self.tls)
        # The token as found for this cluster (common/auth.resolve); its storage nodes get the same.
        self.token = auth.resolve(address, token)
        if not token:  # a found token is this cluster's default; an explicit one stays this client's
            auth.register(self.addresses, self.token)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self._current = 0
        self._stub_cache: tuple[grpc.Channel, pb_grpc.NamespaceStub, pb_grpc.ClusterManagerStub] | None = None
        self._request_ids = RequestIds()
        # the chunk capabilities of the inodes this client stats and writes (client/rpc/grants.py)
        self.caps = CapabilityCache()

    @property
    def current(self) -> str:
        return self.addresses[self._current % len(self.addresses)]

    def _failover(self, reason: Reason) -> None:
        if len(self.addresses) > 1 and reason in (Reason.UNAVAILABLE, Reason.TIMEOUT):
            self._current = (self._current + 1) % len(self.addresses)

    def request_id(self) -> str:
        """A fresh id for one mutation; its retries reuse it, so the metaserver applies it once."""
        return self._request_ids.next()

    def _stubs(self) -> tuple[pb_grpc.NamespaceStub, pb_grpc.ClusterManagerStub]:
        """The current metaserver's stubs, built once per channel: a stub builds a callable per
        method, which cost about as much as a whole stat round trip when done on every call."""
        channel = CHANNELS.get(self.current, self.token)  # a new channel after a fork or a failover
        cached = self._stub_cache
        if cached is None or cached[0] is not channel:
            cached = (channel, pb_grpc.NamespaceStub(channel), pb_grpc.ClusterManagerStub(channel))
            self._stub_cache = cached
        return cached[1], cached[2]

    @property
    def _ns(self) -> pb_grpc.NamespaceStub:
        return self._stubs()[0]

    @property
    def _cm(self) -> pb_grpc.ClusterManagerStub:
        return self._stubs()[1]

    def _call(self, fn: Callable[[], T], path: str | None) -> T:
        try:
            return call_with_retry(fn, self.retry_deadline, on_retry=self._failover,
                                   what=f"metaserver {self.address}")
        except grpc.RpcError as err:
            exc = to_exception(err, path)
            if isinstance(exc, (ConnectionError, TimeoutError)):
                exc = type(exc)(exc.errno, f"metaserver {self.address}: {exc.strerror}", path)
            raise exc from None

    # ---- namespace ----

    def mkdir(self, path: str, parents: bool = False, layout: pb.Layout | None = None) -> pb.Inode:
        path = checked_path(path)
        req = pb.MkdirRequest(path=path, parents=parents, layout=layout, request_id=self.request_id())
        return self._call(lambda: self._ns.Mkdir(req, timeout=self.timeout), path)

    def create(self, path: str, exclusive: bool = False, parents: bool = False) -> pb.Inode:
        path = checked_path(path)
        req = pb.CreateRequest(path=path, exclusive=exclusive, parents=parents, request_id=self.request_id())
        return self._call(lambda: self._ns.Create(req, timeout=self.timeout), path)

    def stat(self, path: str) -> pb.Inode:
        path = checked_path(path)
        req = pb.PathRequest(path=path)
        inode = self._call(lambda: self._ns.Stat(req, timeout=self.timeout), path)
        self._learn_read(inode, path)
        return inode

    def _learn_read(self, inode: pb.Inode, path: str) -> None:
        if inode.capability:
            self.caps.learn(inode.id, inode.capability, "r", lambda: self.stat(path))

    def _learn_session(self, session: pb.WriteSession) -> None:
        if session.inode.capability:
            sid, path = session.session_id, session.path

            def refresh() -> None:
                try:
                    self.renew_session(sid, path)
                except OSError:  # the session closed: reads of what it wrote need a read capability
                    self.stat(path)

            self.caps.learn(session.inode.id, session.inode.capability, "rwd", refresh)

    def list_page(self, path: str, start_after: str = "", limit: int = 0) -> pb.ListReply:
        path = checked_path(path)
        req = pb.ListRequest(path=path, start_after=start_after, limit=limit)
        return self._call(lambda: self._ns.List(req, timeout=self.timeout), path)

    def list(self, path: str, page_size: int = 0) -> Iterator[pb.DirEntry]:
        """All entries of a directory, fetched page by page."""
        start_after = ""
        while True:
            reply = self.list_page(path, start_after, page_size)
            yield from reply.entries
            if not reply.more or not reply.entries:
                return
            start_after = reply.entries[-1].name

    def rename(self, src: str, dst: str) -> None:
        src, dst = checked_path(src), checked_path(dst)
        req = pb.RenameRequest(src=src, dst=dst, request_id=self.request_id())
        self._call(lambda: self._ns.Rename(req, timeout=self.timeout), src)

    def remove(self, path: str, recursive: bool = False) -> None:
        path = checked_path(path)
        req = pb.RemoveRequest(path=path, recursive=recursive, request_id=self.request_id())
        self._call(lambda: self._ns.Remove(req, timeout=self.timeout), path)

    def set_layout(self, path: str, layout: pb.Layout) -> pb.Inode:
        path = checked_path(path)
        req = pb.SetLayoutRequest(path=path, layout=layout)
        return self._call(lambda: self._ns.SetLayout(req, timeout=self.timeout), path)

    def set_attr(self, path: str, **changes: int) -> pb.Inode:
        """Sets mode, uid, gid, atime_ns, mtime_ns and/or length (files); returns the inode."""
        path = checked_path(path)
        req = pb.SetAttrRequest(path=path, **changes)
        return self._call(lambda: self._ns.SetAttr(req, timeout=self.timeout), path)

    def open_write(self, path: str, mode: int, client_id: str, parents: bool = True,
                   layout: pb.Layout | None = None) -> pb.WriteSession:
        path = checked_path(path)
        req = pb.OpenWriteRequest(path=path, mode=mode, parents=parents, layout=layout, client_id=client_id,
                                  request_id=self.request_id())
        session = self._call(lambda: self._ns.OpenWrite(req, timeout=self.timeout), path)
        self._learn_session(session)
        return session

    def renew_session(self, session_id: str, path: str | None = None) -> pb.WriteSession:
        req = pb.SessionRequest(session_id=session_id)
        session = self._call(lambda: self._ns.RenewSession(req, timeout=self.timeout), path)
        self._learn_session(session)
        return session

    def close_write(self, session_id: str, length: int, commit: bool = True,
                    path: str | None = None) -> pb.Inode:
        req = pb.CloseWriteRequest(session_id=session_id, length=length, commit=commit)
        return self._call(lambda: self._ns.CloseWrite(req, timeout=self.timeout), path)

    # ---- batches: one round trip for many small files ----

    def stat_many(self, paths: Sequence[str]) -> list[pb.Inode | Exception]:
        """Each path's inode, or the exception a single stat would raise, in order."""
        checked = [checked_path(p) for p in paths]
        out: list[pb.Inode | Exception] = []
        for part in _batches(checked):
            req = pb.StatManyRequest(paths=part)
            reply = self._call(lambda: self._ns.StatMany(req, timeout=self.timeout), part[0])
            for r, p in zip(reply.results, part):
                if not r.reason:
                    self._learn_read(r.inode, p)
            out.extend(_item(r.inode, r, p) for r, p in zip(reply.results, part))
        return out

    def open_write_many(self, paths: Sequence[str], mode: int, client_id: str, parents: bool = True,
                        layout: pb.Layout | None = None) -> list[pb.WriteSession | Exception]:
        """One REPLACE/CREATE_NEW session per path (one synced batch per MAX_BATCH paths)."""
        checked = [checked_path(p) for p in paths]
        out: list[pb.WriteSession | Exception] = []
        for part in _batches(checked):
            req = pb.OpenWriteManyRequest(paths=part, mode=mode, parents=parents, layout=layout, client_id=client_id)
            reply = self._call(lambda: self._ns.OpenWriteMany(req, timeout=self.timeout), part[0])
            for r in reply.results:
                if not r.reason:
                    self._learn_session(r.session)
            out.extend(_item(r.session, r, p) for r, p in zip(reply.results, part))
        return out

    def close_write_many(self, closes: Sequence[tuple[str, int, bool]],
                         paths: Sequence[str | None] | None = None) -> list[pb.Inode | Exception]:
        """Closes (session id, length, commit) items; each batch of MAX_BATCH is one synced batch."""
        names = list(paths) if paths is not None else [None] * len(closes)
        out: list[pb.Inode | Exception] = []
        for start in range(0, len(closes), config.MAX_BATCH):
            part = closes[start:start + config.MAX_BATCH]
            req = pb.CloseWriteManyRequest(closes=[pb.CloseWriteRequest(session_id=s, length=n, commit=c)
                                                   for s, n, c in part])
            reply = self._call(lambda: self._ns.CloseWriteMany(req, timeout=self.timeout), names[start])
            out.extend(_item(r.inode, r, p) for r, p in zip(reply.results, names[start:start + len(part)]))
        return out

    def check_namespace(self) -> pb.NamespaceCheckReply:
        """The metaserver's namespace check (fsck): problems, linked files, pending inodes."""
        reply = self._call(lambda: self._ns.CheckNamespace(pb.Empty(), timeout=max(self.timeout, 60.0)), None)
        for inode, path in zip(reply.files, reply.file_paths):
            self._learn_read(inode, path)
        return reply

    def probe(self, timeout: float) -> None:
        """Fails within `timeout` seconds, naming the address, when no metaserver can be reached
        (the first one that answers becomes the current one)."""
        futures = [grpc.channel_ready_future(CHANNELS.get(a, self.token)) for a in self.addresses]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for k, fut in enumerate(futures):
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._current = k
                    return
            time.sleep(0.01)
        for fut in futures:
            fut.cancel()
        raise ConnectionRefusedError(111, f"cannot reach the metaserver at {self.address} "
                                     f"(no answer within {timeout:g} s; is the cluster up?)")

    # ---- cluster ----

    def routing(self, known_version: int = 0) -> pb.RoutingReply:
        req = pb.RoutingRequest(known_version=known_version)
        return self._call(lambda: self._cm.GetRouting(req, timeout=self.timeout), None)

    def space(self) -> pb.SpaceReply:
        """Raw capacity and free bytes of the cluster's disks, and its replication."""
        return self._call(lambda: self._cm.GetSpace(pb.Empty(), timeout=self.timeout), None)


def _batches(paths: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(paths), config.MAX_BATCH):
        yield paths[start:start + config.MAX_BATCH]


def _item(value: T, result: pb.InodeResult | pb.SessionResult, path: str | None) -> T | Exception:
    """One batch item: its value, or the built-in exception of its reason (from common/errors.py)."""
    if not result.reason:
        return value
    try:
        reason = Reason(result.reason)
    except ValueError:
        reason = Reason.INTERNAL
    return make_exception(reason, result.message or reason.value, path)


class RoutingCache:
    """The client's copy of the routing table, refreshed when a call says it moved."""

    def __init__(self, meta: MetaClient) -> None:
        self._meta = meta
        self._lock = threading.Lock()
        self._table: pb.RoutingTable | None = None
        self._chains: dict[int, pb.ChainInfo] = {}
        self._nodes: dict[int, pb.NodeInfo] = {}

    def table(self) -> pb.RoutingTable:
        if self._table is None:
            self.refresh()
        assert self._table is not None
        return self._table

    def refresh(self) -> pb.RoutingTable:
        with self._lock:
            known = self._table.version if self._table is not None else 0
            reply = self._meta.routing(known)
            if reply.changed or self._table is None:
                self._install(reply.routing)
            assert self._table is not None
            return self._table

    def _install(self, table: pb.RoutingTable) -> None:
        nodes = [a for n in table.nodes for a in (n.address, n.data_address)]
        register_tls(nodes, self._meta.tls)
        if auth.token_for(self._meta.addresses[0]) == self._meta.token:
            auth.register(nodes, self._meta.token)
        self._table = table
        self._chains = {c.chain_id: c for c in table.chains}
        self._nodes = {n.node_id: n for n in table.nodes}

    @property
    def token(self) -> str | None:
        """The token this client presents to the cluster's storage nodes (its metaserver's)."""
        return self._meta.token

    @property
    def caps(self) -> CapabilityCache:
        """The chunk capabilities its metadata client collected (client/rpc/grants.py)."""
        return self._meta.caps

    def chain(self, chain_id: int) -> pb.ChainInfo:
        self.table()
        chain = self._chains.get(chain_id)
        if chain is None:
            self.refresh()
            chain = self._chains.get(chain_id)
        if chain is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"chain {chain_id} is not in the routing table")
        return chain

    def node(self, node_id: int) -> pb.NodeInfo:
        if self._table is None:
            self.refresh()
        node = self._nodes.get(node_id)
        if node is None:
            raise ChainfsError(Reason.STALE_ROUTING, f"node {node_id} is not in the routing table")
        return node

    def node_address(self, node_id: int) -> str:
        return self.node(node_id).address
