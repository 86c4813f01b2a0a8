"""gRPC servicers: thin adapters from meta.proto requests to Namespace and ClusterManager calls.

Why thin: all rules live in the logic classes (tested without gRPC); here we only check that the
request is well formed and translate. `rpc.handler` turns a ChainfsError into its gRPC status with
the `chainfs-reason` trailer, and anything unexpected into INTERNAL (logged).
"""

from __future__ import annotations

import logging

import grpc

from chainfs.common import auth, capabilities, config
from chainfs.common.addresses import split_address
from chainfs.common.errors import ChainfsError, Reason
from chainfs.common.rpc import handler
from chainfs.metaserver.cluster_manager import ClusterManager
from chainfs.metaserver.namespace import Namespace
from chainfs.metaserver.ns_check import check_namespace
from chainfs.proto import meta_pb2 as pb
from chainfs.proto import meta_pb2_grpc as pb_grpc

MAX_HOST_CHARS = 253


def check_address(field: str, text: str) -> None:
    """INVALID_ARGUMENT unless `text` is HOST:PORT with a plausible host (a junk registration would
    form chains nobody can reach)."""
    try:
        host, _ = split_address(text)
    except ValueError as exc:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"register: {field}: {exc}") from None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if len(bare) > MAX_HOST_CHARS or not bare or any(c.isspace() or c in "/@?#[]" for c in bare) or (
            ":" in bare and not host.startswith("[")):
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"register: {field}: malformed host in {text!r}")


def _owner(context: grpc.ServicerContext) -> str:
    """The node token name of the caller ("" when this metaserver checks no tokens)."""
    ident = auth.identity_of(context)
    return ident.name if ident is not None else ""

log = logging.getLogger(__name__)


def _layout(request: pb.MkdirRequest | pb.CreateRequest | pb.OpenWriteRequest | pb.OpenWriteManyRequest
            | pb.SetLayoutRequest) -> pb.Layout | None:
    return request.layout if request.HasField("layout") else None


def _need_path(path: str, field: str = "path") -> str:
    if not path:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"{field} is required")
    return path


def _check_batch(count: int) -> None:
    if count > config.MAX_BATCH:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"a batch holds at most {config.MAX_BATCH} items, not {count}")


def _inode_result(result: pb.Inode | ChainfsError, holder: str | None = None) -> pb.InodeResult:
    """`holder` given: a file's inode carries a read capability for that caller (StatMany)."""
    if isinstance(result, ChainfsError):
        return pb.InodeResult(reason=result.reason.value, message=result.message)
    reply = pb.InodeResult(inode=result)
    if holder is not None and result.type == pb.FILE:
        reply.inode.capability = capabilities.grant(result.id, capabilities.READ, holder)
    return reply


def _readable(inode: pb.Inode, holder: str) -> pb.Inode:
    """A copy of a file's inode carrying a read capability (Stat): what a read of it needs."""
    if inode.type != pb.FILE or auth.secret() is None:
        return inode
    reply = pb.Inode()
    reply.CopyFrom(inode)
    reply.capability = capabilities.grant(inode.id, capabilities.READ, holder)
    return reply


def _writable(session: pb.WriteSession, holder: str) -> pb.WriteSession:
    """The session's inode carries the capability to write it (OpenWrite(Many), RenewSession)."""
    if auth.secret() is not None:
        session.inode.capability = capabilities.grant(session.inode.id, capabilities.SESSION_RIGHTS, holder)
    return session


def _caller(context: grpc.ServicerContext) -> str:
    return auth.principal(auth.identity_of(context))


class NamespaceServicer(pb_grpc.NamespaceServicer):
    def __init__(self, namespace: Namespace) -> None:
        self.ns = namespace

    @handler
    def Mkdir(self, request: pb.MkdirRequest, context: grpc.ServicerContext) -> pb.Inode:
        return self.ns.mkdir(_need_path(request.path), request.parents, _layout(request), request.request_id)

    @handler
    def Create(self, request: pb.CreateRequest, context: grpc.ServicerContext) -> pb.Inode:
        return self.ns.create(_need_path(request.path), request.exclusive, request.parents, _layout(request),
                              request.request_id)

    @handler
    def Stat(self, request: pb.PathRequest, context: grpc.ServicerContext) -> pb.Inode:
        return _readable(self.ns.stat(_need_path(request.path)), _caller(context))

    @handler
    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListReply:
        entries, more = self.ns.list(_need_path(request.path), request.start_after, request.limit)
        return pb.ListReply(entries=entries, more=more)

    @handler
    def Rename(self, request: pb.RenameRequest, context: grpc.ServicerContext) -> pb.Empty:
        self.ns.rename(_need_path(request.src, "src"), _need_path(request.dst, "dst"), request.request_id)
        return pb.Empty()

    @handler
    def Remove(self, request: pb.RemoveRequest, context: grpc.ServicerContext) -> pb.Empty:
        self.ns.remove(_need_path(request.path), request.recursive, request.request_id)
        return pb.Empty()

    @handler
    def SetLayout(self, request: pb.SetLayoutRequest, context: grpc.ServicerContext) -> pb.Inode:
        if not request.HasField("layout"):
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"layout is required: {request.path}")
        return self.ns.set_layout(_need_path(request.path), request.layout)

    @handler
    def OpenWrite(self, request: pb.OpenWriteRequest, context: grpc.ServicerContext) -> pb.WriteSession:
        caller = _caller(context)
        return _writable(self.ns.open_write(
            _need_path(request.path), request.mode, request.parents, _layout(request), request.client_id,
            request.request_id, caller,
        ), caller)

    @handler
    def RenewSession(self, request: pb.SessionRequest, context: grpc.ServicerContext) -> pb.WriteSession:
        caller = _caller(context)
        return _writable(self.ns.renew_session(request.session_id, caller), caller)

    @handler
    def CloseWrite(self, request: pb.CloseWriteRequest, context: grpc.ServicerContext) -> pb.Inode:
        return self.ns.close_write(request.session_id, request.length, request.commit,
                                   auth.principal(auth.identity_of(context)))

    @handler
    def StatMany(self, request: pb.StatManyRequest, context: grpc.ServicerContext) -> pb.StatManyReply:
        _check_batch(len(request.paths))
        holder = _caller(context) if auth.secret() is not None else None
        return pb.StatManyReply(results=[_inode_result(r, holder) for r in self.ns.stat_many(request.paths)])

    @handler
    def OpenWriteMany(self, request: pb.OpenWriteManyRequest, context: grpc.ServicerContext) -> pb.OpenWriteManyReply:
        _check_batch(len(request.paths))
        caller = _caller(context)
        results = self.ns.open_write_many(request.paths, request.mode, request.parents, _layout(request),
                                          request.client_id, caller)
        return pb.OpenWriteManyReply(results=[
            pb.SessionResult(reason=r.reason.value, message=r.message) if isinstance(r, ChainfsError)
            else pb.SessionResult(session=_writable(r, caller)) for r in results])

    @handler
    def CloseWriteMany(self, request: pb.CloseWriteManyRequest,
                       context: grpc.ServicerContext) -> pb.CloseWriteManyReply:
        _check_batch(len(request.closes))
        results = self.ns.close_write_many([(c.session_id, c.length, c.commit) for c in request.closes],
                                           auth.principal(auth.identity_of(context)))
        return pb.CloseWriteManyReply(results=[_inode_result(r) for r in results])

    @handler
    def SetAttr(self, request: pb.SetAttrRequest, context: grpc.ServicerContext) -> pb.Inode:
        fields = ("mode", "uid", "gid", "atime_ns", "mtime_ns", "length")
        changes = {f: getattr(request, f) for f in fields if request.HasField(f)}
        return self.ns.set_attr(_need_path(request.path), **changes)

    @handler
    def CheckNamespace(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.NamespaceCheckReply:
        chains = {cid for cid, _ in self.ns.chains.chain_lengths()} if self.ns.chains is not None else None
        reply = check_namespace(self.ns, chains)
        if auth.secret() is not None:  # fsck --verify-data reads every file: an admin's read capabilities
            caller = _caller(context)
            for inode in reply.files:
                inode.capability = capabilities.grant(inode.id, capabilities.READ, caller)
        return reply


class ClusterManagerServicer(pb_grpc.ClusterManagerServicer):
    def __init__(self, cluster: ClusterManager) -> None:
        self.cluster = cluster

    @handler
    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterReply:
        self.cluster.require_active()
        check_address("address", request.address)
        if request.data_address:
            check_address("data_address", request.data_address)
        if request.metrics_address:
            check_address("metrics_address", request.metrics_address)
        targets = [(t.target_id, t.path) for t in request.targets]
        endpoint = pb.NodeInfo(data_address=request.data_address, host_id=request.host_id,
                               local_socket=request.local_socket, metrics_address=request.metrics_address)
        node_id, target_ids, routing = self.cluster.register(request.node_id, request.address, targets, endpoint,
                                                              owner=_owner(context))
        return pb.RegisterReply(node_id=node_id, target_ids=target_ids, routing=routing)

    @handler
    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatReply:
        self.cluster.require_active()
        if not request.node_id:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "heartbeat: node_id is required")
        if request.address:
            check_address("address", request.address)
        return self.cluster.heartbeat(request.node_id, request.address, request.targets, request.routing_version,
                                      owner=_owner(context))

    @handler
    def GetRouting(self, request: pb.RoutingRequest, context: grpc.ServicerContext) -> pb.RoutingReply:
        self.cluster.require_active()
        changed, routing = self.cluster.get_routing(request.known_version)
        reply = pb.RoutingReply(changed=changed)
        if routing is not None:
            reply.routing.CopyFrom(routing)
        return reply

    @handler
    def GetSpace(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.SpaceReply:
        return self.cluster.space()
