from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[ItemStatus]
    CHUNK_NOT_FOUND: _ClassVar[ItemStatus]
    PENDING: _ClassVar[ItemStatus]
    STALE_ROUTING: _ClassVar[ItemStatus]
    NOT_SERVING: _ClassVar[ItemStatus]
    INVALID: _ClassVar[ItemStatus]
    IO_ERROR: _ClassVar[ItemStatus]
    CHECKSUM_MISMATCH: _ClassVar[ItemStatus]
OK: ItemStatus
CHUNK_NOT_FOUND: ItemStatus
PENDING: ItemStatus
STALE_ROUTING: ItemStatus
NOT_SERVING: ItemStatus
INVALID: ItemStatus
IO_ERROR: ItemStatus
CHECKSUM_MISMATCH: ItemStatus

class ChunkId(_message.Message):
    __slots__ = ("inode", "index")
    INODE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    inode: int
    index: int
    def __init__(self, inode: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class WriteHeader(_message.Message):
    __slots__ = ("chain_id", "chain_version", "chunk", "offset", "length", "replace", "data_crc", "chunk_size", "request_id", "version", "from_target", "capability")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    DATA_CRC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_TARGET_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    chain_version: int
    chunk: ChunkId
    offset: int
    length: int
    replace: bool
    data_crc: int
    chunk_size: int
    request_id: str
    version: int
    from_target: int
    capability: str
    def __init__(self, chain_id: _Optional[int] = ..., chain_version: _Optional[int] = ..., chunk: _Optional[_Union[ChunkId, _Mapping]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., replace: _Optional[bool] = ..., data_crc: _Optional[int] = ..., chunk_size: _Optional[int] = ..., request_id: _Optional[str] = ..., version: _Optional[int] = ..., from_target: _Optional[int] = ..., capability: _Optional[str] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WriteHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WriteHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkMeta(_message.Message):
    __slots__ = ("chunk", "version", "pending_version", "chain_version", "length", "crc", "block_crcs")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PENDING_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CRC_FIELD_NUMBER: _ClassVar[int]
    BLOCK_CRCS_FIELD_NUMBER: _ClassVar[int]
    chunk: ChunkId
    version: int
    pending_version: int
    chain_version: int
    length: int
    crc: int
    block_crcs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, chunk: _Optional[_Union[ChunkId, _Mapping]] = ..., version: _Optional[int] = ..., pending_version: _Optional[int] = ..., chain_version: _Optional[int] = ..., length: _Optional[int] = ..., crc: _Optional[int] = ..., block_crcs: _Optional[_Iterable[int]] = ...) -> None: ...

class StoredChunk(_message.Message):
    __slots__ = ("meta", "recent_requests", "pending_block_crcs")
    META_FIELD_NUMBER: _ClassVar[int]
    RECENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_BLOCK_CRCS_FIELD_NUMBER: _ClassVar[int]
    meta: ChunkMeta
    recent_requests: _containers.RepeatedScalarFieldContainer[str]
    pending_block_crcs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, meta: _Optional[_Union[ChunkMeta, _Mapping]] = ..., recent_requests: _Optional[_Iterable[str]] = ..., pending_block_crcs: _Optional[_Iterable[int]] = ...) -> None: ...

class WriteReply(_message.Message):
    __slots__ = ("meta", "duplicate")
    META_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    meta: ChunkMeta
    duplicate: bool
    def __init__(self, meta: _Optional[_Union[ChunkMeta, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ReadItem(_message.Message):
    __slots__ = ("chain_id", "chain_version", "chunk", "offset", "length")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    chain_version: int
    chunk: ChunkId
    offset: int
    length: int
    def __init__(self, chain_id: _Optional[int] = ..., chain_version: _Optional[int] = ..., chunk: _Optional[_Union[ChunkId, _Mapping]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("items", "capabilities")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReadItem]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[ReadItem, _Mapping]]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class ReadItemHeader(_message.Message):
    __slots__ = ("item", "status", "meta", "length", "data_crc", "message")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DATA_CRC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    item: int
    status: ItemStatus
    meta: ChunkMeta
    length: int
    data_crc: int
    message: str
    def __init__(self, item: _Optional[int] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., meta: _Optional[_Union[ChunkMeta, _Mapping]] = ..., length: _Optional[int] = ..., data_crc: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReadReply(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ReadItemHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ReadItemHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkListRequest(_message.Message):
    __slots__ = ("chain_id", "inode", "start_after", "limit")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    inode: int
    start_after: ChunkId
    limit: int
    def __init__(self, chain_id: _Optional[int] = ..., inode: _Optional[int] = ..., start_after: _Optional[_Union[ChunkId, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class ChunkListReply(_message.Message):
    __slots__ = ("chunks", "more")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkMeta]
    more: bool
    def __init__(self, chunks: _Optional[_Iterable[_Union[ChunkMeta, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class RemoveChunksRequest(_message.Message):
    __slots__ = ("chain_id", "chain_version", "inode", "from_index", "request_id", "from_target", "capability")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    FROM_INDEX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_TARGET_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    chain_version: int
    inode: int
    from_index: int
    request_id: str
    from_target: int
    capability: str
    def __init__(self, chain_id: _Optional[int] = ..., chain_version: _Optional[int] = ..., inode: _Optional[int] = ..., from_index: _Optional[int] = ..., request_id: _Optional[str] = ..., from_target: _Optional[int] = ..., capability: _Optional[str] = ...) -> None: ...

class RemoveChunksReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("chain_id", "chain_version", "from_target", "remove", "done")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_TARGET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    chain_version: int
    from_target: int
    remove: _containers.RepeatedCompositeFieldContainer[ChunkId]
    done: bool
    def __init__(self, chain_id: _Optional[int] = ..., chain_version: _Optional[int] = ..., from_target: _Optional[int] = ..., remove: _Optional[_Iterable[_Union[ChunkId, _Mapping]]] = ..., done: _Optional[bool] = ...) -> None: ...

class SyncReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class RepairChunkRequest(_message.Message):
    __slots__ = ("chain_id", "chunk", "suspect")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    chunk: ChunkId
    suspect: bool
    def __init__(self, chain_id: _Optional[int] = ..., chunk: _Optional[_Union[ChunkId, _Mapping]] = ..., suspect: _Optional[bool] = ...) -> None: ...

class RepairChunkReply(_message.Message):
    __slots__ = ("repaired",)
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    repaired: bool
    def __init__(self, repaired: _Optional[bool] = ...) -> None: ...

class DataError(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class LocalOpenReply(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReadItemHeader]
    def __init__(self, items: _Optional[_Iterable[_Union[ReadItemHeader, _Mapping]]] = ...) -> None: ...
