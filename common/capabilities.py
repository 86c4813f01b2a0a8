"""Chunk capabilities: what lets a client touch an inode's chunks on a storage node, as HDFS block
tokens do (docs/security.md, "Chunk capabilities").

A token (common/auth.py) says who calls; it does not say which chunks: any user could name any
inode to a storage node. So the metaserver, which checks paths, signs for each inode it hands out
a capability

    cap1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "cap1." + payload))>

with the payload `{"i": inode, "r": rights, "e": expiry unix ms, "u": holder}`: rights are letters
of READ (r), WRITE (w) and REMOVE (d); the holder is the principal (`auth.principal`) it was issued
to. Stat and StatMany return read capabilities, OpenWrite, OpenWriteMany and RenewSession
read-write-remove ones for the session's inode, and the garbage collector signs its own remove
capabilities. Storage nodes verify them with the cluster secret alone (no call to the metaserver)
on every Write, Read (gRPC, data port, short circuit) and RemoveChunks. The MAC covers the "cap1."
prefix, so a capability is never a valid token nor a token a capability.

Nodes (node tokens) need none: they hold the secret, forward writes along chains, resync and
repair; a root user needs none to read (fsck reads every chunk a replica lists). Without a secret (`--insecure`) nothing is issued and nothing checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from chainfs.common import auth
from chainfs.common.errors import ChainfsError, Reason

PREFIX = "cap1"
READ, WRITE, REMOVE = "r", "w", "d"
SESSION_RIGHTS = READ + WRITE + REMOVE  # a write session's owner may do anything to its inode
DEFAULT_TTL = 900.0  # seconds; metaserver --capability-ttl
MAX_VERIFIED = 16384
_NAMES = {READ: "read", WRITE: "write", REMOVE: "remove"}


@dataclass(frozen=True)
class Capability:
    inode: int
    rights: str
    expires_ms: int
    holder: str = ""  # auth.principal of whoever it was issued to ("" = anyone)

    def allows(self, right: str) -> bool:
        return right in self.rights


def issue(secret: bytes, inode: int, rights: str, ttl: float, holder: str = "") -> str:
    """A capability for `inode` with `rights`, valid for `ttl` seconds."""
    if not rights or set(rights) - set(SESSION_RIGHTS):
        raise ValueError(f"capability rights are letters of {SESSION_RIGHTS!r}, not {rights!r}")
    # the JSON of json.dumps(sort_keys=True), built directly: a StatMany signs one per file
    payload = '{"e":%d,"i":%d,"r":"%s","u":%s}' % (int((time.time() + ttl) * 1000), int(inode), rights,
                                                    json.dumps(holder))
    body = auth.b64(payload.encode())
    return f"{PREFIX}.{body}.{_sign(secret, body)}"


_signers: dict[bytes, Any] = {}


def _sign(secret: bytes, body: str) -> str:
    """`auth.sign(secret, "cap1." + body)`, from an HMAC keyed once per secret (copied per use)."""
    base = _signers.get(secret)
    if base is None:
        base = hmac.new(secret, f"{PREFIX}.".encode(), hashlib.sha256)
        if len(_signers) < 8:
            _signers[secret] = base
    h = base.copy()
    h.update(body.encode("ascii"))
    return auth.b64(h.digest())


def _decode(body: str) -> Capability:
    try:
        p = json.loads(auth.unb64(body))
        return Capability(inode=int(p["i"]), rights=str(p["r"]), expires_ms=int(p["e"]), holder=str(p.get("u") or ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise ChainfsError(Reason.UNAUTHENTICATED, f"malformed capability payload: {exc}") from None


def verify(secret: bytes, text: str, now: float | None = None) -> Capability:
    """What a capability grants; UNAUTHENTICATED when it is malformed, forged or expired."""
    parts = text.split(".") if text else []
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ChainfsError(Reason.UNAUTHENTICATED, "malformed capability (expected cap1.PAYLOAD.MAC)")
    if not hmac.compare_digest(_sign(secret, parts[1]), parts[2]):
        raise ChainfsError(Reason.UNAUTHENTICATED, "bad capability: not signed by this cluster's secret")
    cap = _decode(parts[1])
    if cap.expires_ms < (time.time() if now is None else now) * 1000:
        raise ChainfsError(Reason.UNAUTHENTICATED, f"capability for inode {cap.inode} expired")
    return cap


def peek(text: str) -> Capability | None:
    """What a capability claims, read without verifying it (clients: when to refresh it)."""
    parts = text.split(".") if text else []
    if len(parts) != 3:
        return None
    try:
        return _decode(parts[1])
    except ChainfsError:
        return None


# ---- the metaserver: signing ----

_ttl = DEFAULT_TTL


def set_ttl(ttl: float) -> None:
    """How long the capabilities this process signs stay valid (--capability-ttl)."""
    global _ttl
    if not ttl > 0:
        raise ValueError(f"--capability-ttl must be positive, not {ttl}")
    _ttl = float(ttl)


def ttl() -> float:
    return _ttl


def grant(inode: int, rights: str, holder: str = "") -> str:
    """A capability signed under this process's secret ("" when it has none: insecure)."""
    sec = auth.secret()
    return "" if sec is None else issue(sec, inode, rights, _ttl, holder)


def add_server_args(parser: Any) -> None:
    parser.add_argument("--capability-ttl", type=float, default=DEFAULT_TTL,
                        help="seconds a signed chunk capability stays valid (clients refresh them)")


# ---- storage nodes ----

_lock = threading.Lock()
_verified: dict[str, Capability] = {}


def _checked(text: str) -> Capability:
    """`verify` under this process's secret, each capability's MAC computed once."""
    cap = _verified.get(text)
    if cap is None:
        sec = auth.secret()
        assert sec is not None
        cap = verify(sec, text)
        with _lock:
            if len(_verified) >= MAX_VERIFIED:
                _verified.clear()
            _verified[text] = cap
    elif cap.expires_ms < time.time() * 1000:
        raise ChainfsError(Reason.UNAUTHENTICATED, f"capability for inode {cap.inode} expired")
    return cap


def exempt(ident: auth.Identity | None) -> bool:
    """No check: the process checks nothing (no secret), or a node calls (it holds the secret)."""
    return auth.secret() is None or (ident is not None and ident.is_node)


def _grant(text: str, ident: auth.Identity | None) -> Capability:
    cap = _checked(text)
    if cap.holder and ident is not None and auth.principal(ident) != cap.holder:
        raise ChainfsError(Reason.PERMISSION_DENIED, f"capability for inode {cap.inode} was issued to "
                                                     f"{cap.holder}, not {auth.principal(ident)}")
    return cap


def require(text: str, inode: int, right: str, ident: auth.Identity | None) -> None:
    """Refuses a write or removal of `inode`'s chunks unless `text` grants `right` on it:
    UNAUTHENTICATED without a valid capability, PERMISSION_DENIED for another inode or right.
    `ident` is None on the short-circuit socket (no token there; mode 0600)."""
    if exempt(ident):
        return
    what = _NAMES[right]
    if not text:
        raise ChainfsError(Reason.UNAUTHENTICATED, f"no capability to {what} chunks of inode {inode} "
                                                   "(stat or open the file through the metaserver)")
    cap = _grant(text, ident)
    if cap.inode != inode:
        raise ChainfsError(Reason.PERMISSION_DENIED, f"capability for inode {cap.inode} used on inode {inode}")
    if not cap.allows(right):
        raise ChainfsError(Reason.PERMISSION_DENIED, f"capability for inode {inode} does not allow {what} "
                                                     f"(grants {cap.rights!r})")


def require_read(texts: Iterable[str], inodes: Iterable[int], ident: auth.Identity | None) -> None:
    """Refuses a read batch unless `texts` hold a read capability for every inode it names. A root
    user reads without: fsck probes every chunk a replica lists, unlinked ones included, and root
    may read every file anyway (it may stat and list every path)."""
    if exempt(ident) or (ident is not None and ident.root):
        return
    readable: set[int] = set()
    given = 0
    for text in texts:
        given += 1
        cap = _grant(text, ident)
        if cap.allows(READ):
            readable.add(cap.inode)
    for inode in inodes:
        if inode not in readable:
            if not given:
                raise ChainfsError(Reason.UNAUTHENTICATED, f"no capability to read chunks of inode {inode} "
                                                           "(stat the file through the metaserver)")
            raise ChainfsError(Reason.PERMISSION_DENIED, f"no read capability for inode {inode} in this request")
