from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InodeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INODE_TYPE_UNSPECIFIED: _ClassVar[InodeType]
    FILE: _ClassVar[InodeType]
    DIRECTORY: _ClassVar[InodeType]

class WriteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_MODE_UNSPECIFIED: _ClassVar[WriteMode]
    REPLACE: _ClassVar[WriteMode]
    CREATE_NEW: _ClassVar[WriteMode]
    APPEND: _ClassVar[WriteMode]

class TargetState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_STATE_UNSPECIFIED: _ClassVar[TargetState]
    SERVING: _ClassVar[TargetState]
    SYNCING: _ClassVar[TargetState]
    WAITING: _ClassVar[TargetState]
    LASTSRV: _ClassVar[TargetState]
    OFFLINE: _ClassVar[TargetState]

class LocalTargetState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCAL_STATE_UNSPECIFIED: _ClassVar[LocalTargetState]
    UPTODATE: _ClassVar[LocalTargetState]
    ONLINE: _ClassVar[LocalTargetState]
    OFFLINE_LOCAL: _ClassVar[LocalTargetState]
INODE_TYPE_UNSPECIFIED: InodeType
FILE: InodeType
DIRECTORY: InodeType
WRITE_MODE_UNSPECIFIED: WriteMode
REPLACE: WriteMode
CREATE_NEW: WriteMode
APPEND: WriteMode
TARGET_STATE_UNSPECIFIED: TargetState
SERVING: TargetState
SYNCING: TargetState
WAITING: TargetState
LASTSRV: TargetState
OFFLINE: TargetState
LOCAL_STATE_UNSPECIFIED: LocalTargetState
UPTODATE: LocalTargetState
ONLINE: LocalTargetState
OFFLINE_LOCAL: LocalTargetState

class Layout(_message.Message):
    __slots__ = ("chunk_size", "stripe_width", "replication", "chains")
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    STRIPE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    chunk_size: int
    stripe_width: int
    replication: int
    chains: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, chunk_size: _Optional[int] = ..., stripe_width: _Optional[int] = ..., replication: _Optional[int] = ..., chains: _Optional[_Iterable[int]] = ...) -> None: ...

class Inode(_message.Message):
    __slots__ = ("id", "type", "length", "layout", "ctime_ns", "mtime_ns", "mode", "parent_id", "uid", "gid", "atime_ns", "capability")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    CTIME_NS_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    id: int
    type: InodeType
    length: int
    layout: Layout
    ctime_ns: int
    mtime_ns: int
    mode: int
    parent_id: int
    uid: int
    gid: int
    atime_ns: int
    capability: str
    def __init__(self, id: _Optional[int] = ..., type: _Optional[_Union[InodeType, str]] = ..., length: _Optional[int] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., ctime_ns: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., mode: _Optional[int] = ..., parent_id: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., atime_ns: _Optional[int] = ..., capability: _Optional[str] = ...) -> None: ...

class DirEntry(_message.Message):
    __slots__ = ("name", "inode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    inode: Inode
    def __init__(self, name: _Optional[str] = ..., inode: _Optional[_Union[Inode, _Mapping]] = ...) -> None: ...

class PathRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class MkdirRequest(_message.Message):
    __slots__ = ("path", "parents", "layout", "request_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    parents: bool
    layout: Layout
    request_id: str
    def __init__(self, path: _Optional[str] = ..., parents: _Optional[bool] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateRequest(_message.Message):
    __slots__ = ("path", "exclusive", "parents", "layout", "request_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    exclusive: bool
    parents: bool
    layout: Layout
    request_id: str
    def __init__(self, path: _Optional[str] = ..., exclusive: _Optional[bool] = ..., parents: _Optional[bool] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("path", "start_after", "limit")
    PATH_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    path: str
    start_after: str
    limit: int
    def __init__(self, path: _Optional[str] = ..., start_after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("entries", "more")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DirEntry]
    more: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[DirEntry, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class RenameRequest(_message.Message):
    __slots__ = ("src", "dst", "request_id")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    src: str
    dst: str
    request_id: str
    def __init__(self, src: _Optional[str] = ..., dst: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("path", "recursive", "request_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    recursive: bool
    request_id: str
    def __init__(self, path: _Optional[str] = ..., recursive: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class SetLayoutRequest(_message.Message):
    __slots__ = ("path", "layout")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    path: str
    layout: Layout
    def __init__(self, path: _Optional[str] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ...) -> None: ...

class SetAttrRequest(_message.Message):
    __slots__ = ("path", "mode", "uid", "gid", "atime_ns", "mtime_ns", "length")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    length: int
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., atime_ns: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class OpenWriteRequest(_message.Message):
    __slots__ = ("path", "mode", "parents", "layout", "client_id", "request_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: WriteMode
    parents: bool
    layout: Layout
    client_id: str
    request_id: str
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[_Union[WriteMode, str]] = ..., parents: _Optional[bool] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., client_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class WriteSession(_message.Message):
    __slots__ = ("session_id", "inode", "lease_expires_ns", "path")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_NS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    inode: Inode
    lease_expires_ns: int
    path: str
    def __init__(self, session_id: _Optional[str] = ..., inode: _Optional[_Union[Inode, _Mapping]] = ..., lease_expires_ns: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class CloseWriteRequest(_message.Message):
    __slots__ = ("session_id", "length", "commit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    length: int
    commit: bool
    def __init__(self, session_id: _Optional[str] = ..., length: _Optional[int] = ..., commit: _Optional[bool] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatManyRequest(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paths: _Optional[_Iterable[str]] = ...) -> None: ...

class InodeResult(_message.Message):
    __slots__ = ("inode", "reason", "message")
    INODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    inode: Inode
    reason: str
    message: str
    def __init__(self, inode: _Optional[_Union[Inode, _Mapping]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StatManyReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InodeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InodeResult, _Mapping]]] = ...) -> None: ...

class OpenWriteManyRequest(_message.Message):
    __slots__ = ("paths", "mode", "parents", "layout", "client_id")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    mode: WriteMode
    parents: bool
    layout: Layout
    client_id: str
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[WriteMode, str]] = ..., parents: _Optional[bool] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., client_id: _Optional[str] = ...) -> None: ...

class SessionResult(_message.Message):
    __slots__ = ("session", "reason", "message")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    session: WriteSession
    reason: str
    message: str
    def __init__(self, session: _Optional[_Union[WriteSession, _Mapping]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class OpenWriteManyReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SessionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SessionResult, _Mapping]]] = ...) -> None: ...

class CloseWriteManyRequest(_message.Message):
    __slots__ = ("closes",)
    CLOSES_FIELD_NUMBER: _ClassVar[int]
    closes: _containers.RepeatedCompositeFieldContainer[CloseWriteRequest]
    def __init__(self, closes: _Optional[_Iterable[_Union[CloseWriteRequest, _Mapping]]] = ...) -> None: ...

class CloseWriteManyReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InodeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InodeResult, _Mapping]]] = ...) -> None: ...

class TargetInfo(_message.Message):
    __slots__ = ("target_id", "node_id", "chain_id", "state", "path", "local_state", "capacity_bytes", "free_bytes", "device")
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STATE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    target_id: int
    node_id: int
    chain_id: int
    state: TargetState
    path: str
    local_state: LocalTargetState
    capacity_bytes: int
    free_bytes: int
    device: int
    def __init__(self, target_id: _Optional[int] = ..., node_id: _Optional[int] = ..., chain_id: _Optional[int] = ..., state: _Optional[_Union[TargetState, str]] = ..., path: _Optional[str] = ..., local_state: _Optional[_Union[LocalTargetState, str]] = ..., capacity_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., device: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "address", "alive", "last_heartbeat_ns", "data_address", "host_id", "local_socket", "metrics_address", "owner")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_NS_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_SOCKET_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    alive: bool
    last_heartbeat_ns: int
    data_address: str
    host_id: str
    local_socket: str
    metrics_address: str
    owner: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., alive: _Optional[bool] = ..., last_heartbeat_ns: _Optional[int] = ..., data_address: _Optional[str] = ..., host_id: _Optional[str] = ..., local_socket: _Optional[str] = ..., metrics_address: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ChainInfo(_message.Message):
    __slots__ = ("chain_id", "version", "targets")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    version: int
    targets: _containers.RepeatedCompositeFieldContainer[TargetInfo]
    def __init__(self, chain_id: _Optional[int] = ..., version: _Optional[int] = ..., targets: _Optional[_Iterable[_Union[TargetInfo, _Mapping]]] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "nodes", "chains", "replication")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    version: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    chains: _containers.RepeatedCompositeFieldContainer[ChainInfo]
    replication: int
    def __init__(self, version: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., chains: _Optional[_Iterable[_Union[ChainInfo, _Mapping]]] = ..., replication: _Optional[int] = ...) -> None: ...

class RegisterTarget(_message.Message):
    __slots__ = ("target_id", "path")
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    target_id: int
    path: str
    def __init__(self, target_id: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("node_id", "address", "targets", "data_address", "host_id", "local_socket", "metrics_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_SOCKET_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    targets: _containers.RepeatedCompositeFieldContainer[RegisterTarget]
    data_address: str
    host_id: str
    local_socket: str
    metrics_address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[RegisterTarget, _Mapping]]] = ..., data_address: _Optional[str] = ..., host_id: _Optional[str] = ..., local_socket: _Optional[str] = ..., metrics_address: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("node_id", "target_ids", "routing")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_IDS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    target_ids: _containers.RepeatedScalarFieldContainer[int]
    routing: RoutingTable
    def __init__(self, node_id: _Optional[int] = ..., target_ids: _Optional[_Iterable[int]] = ..., routing: _Optional[_Union[RoutingTable, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "address", "targets", "routing_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    targets: _containers.RepeatedCompositeFieldContainer[TargetInfo]
    routing_version: int
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[TargetInfo, _Mapping]]] = ..., routing_version: _Optional[int] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("routing_changed", "routing", "heartbeat_timeout_ms")
    ROUTING_CHANGED_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    routing_changed: bool
    routing: RoutingTable
    heartbeat_timeout_ms: int
    def __init__(self, routing_changed: _Optional[bool] = ..., routing: _Optional[_Union[RoutingTable, _Mapping]] = ..., heartbeat_timeout_ms: _Optional[int] = ...) -> None: ...

class RoutingRequest(_message.Message):
    __slots__ = ("known_version",)
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    known_version: int
    def __init__(self, known_version: _Optional[int] = ...) -> None: ...

class RoutingReply(_message.Message):
    __slots__ = ("changed", "routing")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    routing: RoutingTable
    def __init__(self, changed: _Optional[bool] = ..., routing: _Optional[_Union[RoutingTable, _Mapping]] = ...) -> None: ...

class SpaceReply(_message.Message):
    __slots__ = ("capacity_bytes", "free_bytes", "replication", "disks")
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    capacity_bytes: int
    free_bytes: int
    replication: int
    disks: int
    def __init__(self, capacity_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., replication: _Optional[int] = ..., disks: _Optional[int] = ...) -> None: ...

class NamespaceCheckReply(_message.Message):
    __slots__ = ("problems", "files", "pending_inodes", "file_paths", "appending_inodes")
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PENDING_INODES_FIELD_NUMBER: _ClassVar[int]
    FILE_PATHS_FIELD_NUMBER: _ClassVar[int]
    APPENDING_INODES_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedScalarFieldContainer[str]
    files: _containers.RepeatedCompositeFieldContainer[Inode]
    pending_inodes: _containers.RepeatedScalarFieldContainer[int]
    file_paths: _containers.RepeatedScalarFieldContainer[str]
    appending_inodes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, problems: _Optional[_Iterable[str]] = ..., files: _Optional[_Iterable[_Union[Inode, _Mapping]]] = ..., pending_inodes: _Optional[_Iterable[int]] = ..., file_paths: _Optional[_Iterable[str]] = ..., appending_inodes: _Optional[_Iterable[int]] = ...) -> None: ...
