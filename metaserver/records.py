"""Internal records the metaserver keeps beside the protobuf tables: write sessions and pending GC.

Why JSON dataclasses: these never cross the wire (meta.proto's WriteSession is the public view),
so a small, readable, self-describing encoding is enough and needs no proto change.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field

from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import meta_pb2 as pb

SESSION_ID_BYTES = 16  # 128 random bits: a session id cannot be guessed or enumerated
_HEX = frozenset("0123456789abcdef")


def new_session_id() -> str:
    """A fresh session id: 32 lowercase hex digits from the OS's CSPRNG."""
    return secrets.token_hex(SESSION_ID_BYTES)


def check_session_id(session_id: object) -> str:
    """`session_id` if it is 32 lowercase hex digits, else INVALID_ARGUMENT (a bad id is a bad
    request, not an unknown session)."""
    if not (isinstance(session_id, str) and len(session_id) == 2 * SESSION_ID_BYTES and set(session_id) <= _HEX):
        shown = repr(session_id)[:48]
        raise ChainfsError(Reason.INVALID_ARGUMENT,
                           f"malformed write session id {shown}: expected {2 * SESSION_ID_BYTES} lowercase hex digits")
    return session_id


@dataclass
class GcRecord:
    """An unlinked (or never linked) file inode whose chunks must be deleted on the storage nodes.

    `length` is a hint (the last known length; 0 when unknown, e.g. an abandoned session): the
    collector should delete every chunk of `inode_id` on `chains`, not just the first length bytes.
    """

    inode_id: int
    chunk_size: int
    chains: list[int]
    length: int
    created_ns: int
    reason: str = ""

    @classmethod
    def of(cls, inode: pb.Inode, now_ns: int, reason: str, length: int | None = None) -> GcRecord:
        return cls(
            inode_id=inode.id,
            chunk_size=inode.layout.chunk_size,
            chains=list(inode.layout.chains),
            length=inode.length if length is None else length,
            created_ns=now_ns,
            reason=reason,
        )

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> GcRecord:
        return cls(**json.loads(raw))


@dataclass
class SessionRecord:
    """A write session: which inode is written, where it will be linked, and until when.

    The link target is (parent_id, name), not the path: a session follows its directory across a
    rename, as an open directory handle would. `path` is only what the client asked for.
    """

    session_id: str  # new_session_id()
    parent_id: int
    name: str
    path: str
    mode: int  # pb.WriteMode
    inode_hex: str  # the serialized Inode being written (unlinked for REPLACE/CREATE_NEW)
    lease_expires_ns: int
    client_id: str = ""
    owner: str = ""     # auth.principal of the token that opened it ("" without tokens)
    base_length: int = 0  # APPEND: the file's length when the session opened
    created_ns: int = field(default=0)
    # Once closed, the record stays until its lease ends so that a retried CloseWrite (its first
    # reply lost) gets the same answer instead of SESSION_EXPIRED: "" while open, else the outcome.
    closed: str = ""              # "committed" | "abandoned" | "failed"
    result_hex: str = ""          # committed/abandoned: the serialized Inode returned
    error_reason: str = ""        # failed: the Reason value and message raised
    error_message: str = ""

    @property
    def inode(self) -> pb.Inode:
        return pb.Inode.FromString(bytes.fromhex(self.inode_hex))

    @inode.setter
    def inode(self, value: pb.Inode) -> None:
        self.inode_hex = value.SerializeToString().hex()

    def to_proto(self) -> pb.WriteSession:
        return pb.WriteSession(
            session_id=self.session_id,
            inode=self.inode,
            lease_expires_ns=self.lease_expires_ns,
            path=self.path,
        )

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionRecord:
        return cls(**json.loads(raw))
