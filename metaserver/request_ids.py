"""Request ids of namespace mutations: a retry after a lost reply gets the first answer.

Why: a client that sent Rename(a, b) and lost the reply cannot tell "not applied" from "applied";
its retry would fail with NOT_FOUND (a is gone) although the rename happened. Each mutation carries a
request id (`client id:sequence`, the same on every retry), and the metaserver writes a record of
the id and the serialized answer in the SAME batch as the mutation, so either both exist or
neither: a retry finds the record and returns the answer without applying anything again.

Only successes are recorded: a failed mutation changed nothing, so running its retry again is
exactly what the client wants. Records live `REQUEST_ID_TTL` and are swept in age order (a second
key sorted by creation time), so the sweep reads only what it deletes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.store import P_REQUEST_AGE, Txn, Reader, request_age_key, request_key

log = logging.getLogger(__name__)


@dataclass
class RequestRecord:
    op: str          # which mutation used the id ("rename", ...): another op reusing it is refused
    reply_hex: str   # the serialized answer ("" for Empty replies)
    created_ns: int

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RequestRecord:
        return cls(**json.loads(raw))


def check_request_id(request_id: str) -> str:
    """Ids are short printable ASCII (they become key bytes); "" means the caller sent none."""
    if len(request_id) > config.MAX_REQUEST_ID_BYTES or not (request_id.isascii() and request_id.isprintable()):
        raise ChainfsError(Reason.INVALID_ARGUMENT,
                           f"request id must be printable ASCII of at most {config.MAX_REQUEST_ID_BYTES} bytes")
    return request_id


def replay(r: Reader, request_id: str, op: str) -> bytes | None:
    """The first answer to `request_id`, or None when this is its first arrival (or it has none)."""
    if not check_request_id(request_id):
        return None
    raw = r.get(request_key(request_id))
    if raw is None:
        return None
    record = RequestRecord.from_bytes(raw)
    if record.op != op:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"request id {request_id} was already used by {record.op}")
    log.debug("request %s (%s) is a retry: answering as the first time", request_id, op)
    return bytes.fromhex(record.reply_hex)


def remember(txn: Txn, request_id: str, op: str, reply: bytes, now_ns: int) -> None:
    """Adds the record to the mutation's own transaction (a no-op without an id)."""
    if request_id:
        txn.put(request_key(request_id), RequestRecord(op, reply.hex(), now_ns).to_bytes())
        txn.put(request_age_key(now_ns, request_id), b"")


def sweep(txn: Txn, older_than_ns: int) -> int:
    """Deletes (in `txn`) the records created before `older_than_ns`; returns how many."""
    old: list[bytes] = []
    for key, _ in txn.scan(P_REQUEST_AGE):  # through the txn: validated at commit on etcd
        if int.from_bytes(key[1:9], "big") >= older_than_ns:
            break
        old.append(key)
    for key in old:
        txn.delete(key)
        txn.delete(request_key(key[9:].decode("utf-8")))
    return len(old)
