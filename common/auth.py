"""Identities: the cluster secret, signed tokens, and who may call what (docs/security.md,
"Authentication").

A cluster has one secret (32 random bytes, `DIR/auth/secret`, mode 0600). A token is

    cfs1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, payload))>

with the payload `{"k": "node"|"user", "n": name, "r": root, "p": path prefix or "", "e": expiry
unix seconds or 0}`: self-describing, so any process holding the secret (the metaserver and every
storage node) verifies a token without asking anyone. Node tokens are what storage servers (and
the metaserver, for its own calls) carry; user tokens what clients carry (`chainfs user add`).

Every gRPC call carries its token in the metadata key `authorization` ("Bearer TOKEN"), added by
`common.rpc.ChannelPool` from `token_for(address)`; a server that has a secret (`set_secret`)
checks every call in `ServerAuth` (missing or bad: UNAUTHENTICATED; outside its rights:
PERMISSION_DENIED). Which token goes to which address is decided as `common.tls` decides TLS:
addresses registered by clients, else the process's own token (a server's node token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import posixpath
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import grpc

from chainfs.common.addresses import PerAddress
from chainfs.common.errors import ChainfsError, Reason, abort
from chainfs.common.decoding import Malformed, handler_kind

ENV_TOKEN_FILE = "CHAINFS_TOKEN_FILE"
METADATA_KEY = "authorization"
PREFIX = "cfs1"
SECRET_BYTES = 32
KINDS = ("node", "user")

# Methods only storage nodes (node tokens) may call: they change what the cluster believes about
# nodes, or replicate between chain members.
NODE_ONLY = frozenset({"/chainfs.ClusterManager/Register", "/chainfs.ClusterManager/Heartbeat",
                       "/chainfs.Storage/Sync"})
# Cluster-admin methods: a node (the metaserver, a peer's resync) or a root user (fsck). ListChunks
# lists every chunk of a chain, whatever path it belongs to; RepairChunk other than a suspect
# report (which only asks a node to verify its copy) is checked in its handler (require_admin).
ADMIN = frozenset({"/chainfs.Namespace/CheckNamespace", "/chainfs.Storage/ListChunks"})
# Probes stay open (load balancers and `wait_for` ask them without credentials).
OPEN = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
PATH_FIELDS = ("path", "src", "dst", "paths")


@dataclass(frozen=True)
class Identity:
    kind: str           # "node" or "user"
    name: str
    root: bool = False
    prefix: str = ""    # a user token limited to this subtree ("" = anywhere)
    expires: int = 0    # unix seconds, 0 = never

    @property
    def is_node(self) -> bool:
        return self.kind == "node"

    def may_touch(self, path: str) -> bool:
        """Whether this identity may name `path` (its prefix, or anything under it)."""
        if not self.prefix or self.root or self.is_node:
            return True
        p = posixpath.normpath("/" + path.lstrip("/"))
        return p == self.prefix or p.startswith(self.prefix.rstrip("/") + "/")


# ---- the secret ----

def create_secret(path: str | os.PathLike[str]) -> bytes:
    """Writes a new secret (mode 0600, its directory 0700) unless one exists; returns the secret."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_secret(p)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(SECRET_BYTES))
    return load_secret(p)


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret in `path`; PermissionError if others may read it, ValueError if it is too short."""
    p = Path(path)
    try:
        mode = p.stat().st_mode & 0o077
        data = p.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(exc.errno, f"cluster secret unreadable: {exc.strerror}", str(p)) from None
    if mode:
        raise PermissionError(13, f"cluster secret must be mode 0600 (is readable by others)", str(p))
    if len(data) < SECRET_BYTES:
        raise ValueError(f"cluster secret {p} holds {len(data)} bytes, needs {SECRET_BYTES}")
    return data


# ---- tokens ----

def b64(data: bytes) -> str:
    """Unpadded base64url (tokens and capabilities)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, body: str) -> str:
    """base64url(HMAC-SHA256(secret, body)): the MAC of tokens and, over their own prefix, of
    chunk capabilities (common/capabilities.py)."""
    return b64(hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest())


def issue(secret: bytes, kind: str, name: str, *, root: bool = False, prefix: str = "",
          ttl: float | None = None) -> str:
    """A signed token for `name`; `prefix` limits a user token to a subtree, `ttl` (s) expires it."""
    if kind not in KINDS:
        raise ValueError(f"token kind must be one of {KINDS}, got {kind!r}")
    if not name:
        raise ValueError("a token needs a name")
    if prefix:
        if not prefix.startswith("/"):
            raise ValueError(f"prefix must be an absolute path, got {prefix!r}")
        prefix = posixpath.normpath(prefix)
    payload = {"k": kind, "n": name, "r": bool(root), "p": prefix,
               "e": int(time.time() + ttl) if ttl else 0}
    body = b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}.{body}.{sign(secret, body)}"


def verify(secret: bytes, token: str, now: float | None = None) -> Identity:
    """The identity a token proves; ChainfsError(UNAUTHENTICATED) when it is malformed, forged
    (its MAC does not match this cluster's secret) or expired."""
    parts = token.split(".") if token else []
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ChainfsError(Reason.UNAUTHENTICATED, "malformed token (expected cfs1.PAYLOAD.MAC)")
    if not hmac.compare_digest(sign(secret, parts[1]), parts[2]):
        raise ChainfsError(Reason.UNAUTHENTICATED, "bad token: not signed by this cluster's secret")
    try:
        p = json.loads(unb64(parts[1]))
        ident = Identity(kind=str(p["k"]), name=str(p["n"]), root=bool(p.get("r")),
                         prefix=str(p.get("p") or ""), expires=int(p.get("e") or 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise ChainfsError(Reason.UNAUTHENTICATED, f"malformed token payload: {exc}") from None
    if ident.kind not in KINDS:
        raise ChainfsError(Reason.UNAUTHENTICATED, f"unknown token kind {ident.kind!r}")
    if ident.expires and ident.expires < (time.time() if now is None else now):
        raise ChainfsError(Reason.UNAUTHENTICATED, f"token of {ident.name} expired")
    return ident


def read_token_file(path: str | os.PathLike[str]) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise FileNotFoundError(exc.errno, f"token file unreadable: {exc.strerror}", str(path)) from None
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


# ---- this process: its secret (servers), its own token, tokens per address ----

_lock = threading.Lock()
_secret: bytes | None = None
_TOKENS: PerAddress[str] = PerAddress()  # the default is the process's own token
_verified: dict[str, Identity] = {}
MAX_VERIFIED = 4096

TokenArg = Union[str, bool, None]


def set_secret(secret: bytes | None) -> None:
    """Turns call checking on in this process's servers (None: off, `--insecure`)."""
    global _secret
    with _lock:
        _secret = secret
        _verified.clear()


def secret() -> bytes | None:
    return _secret


# The token this process's outgoing calls carry unless an address has its own; the addresses that
# have one (a cluster started here, a routing table's nodes); the token a call to an address carries.
set_process_token = _TOKENS.set_default
register = _TOKENS.register
forget = _TOKENS.forget
token_for = _TOKENS.get


def resolve(address: str, explicit: TokenArg = None) -> str | None:
    """A client's token for the cluster at `address` ("h:p" or "h1:p1,h2:p2"), looked for as
    kubectl and the AWS CLI look for credentials: the explicit argument (a token; False for none),
    then the file `$CHAINFS_TOKEN_FILE`, then the per-user credentials file
    (`common.credentials`), then what this process registered for it, then the process's own."""
    if explicit is False:
        return None
    if isinstance(explicit, str) and explicit:
        return explicit
    if _secret is not None and _TOKENS.default:
        return _TOKENS.default  # a server process speaks as itself (its node token), never as a user
    env = os.environ.get(ENV_TOKEN_FILE)
    if env:
        return read_token_file(env)
    from chainfs.common import credentials

    addresses = [a.strip() for a in address.split(",") if a.strip()]
    for a in addresses:
        found = credentials.lookup(a)
        if found:
            return found
    return _TOKENS.first_registered(addresses)


def check(token: str | None) -> Identity:
    """The identity of a presented token under this process's secret (cached once verified)."""
    sec = _secret
    assert sec is not None
    if not token:
        raise ChainfsError(Reason.UNAUTHENTICATED, "no token: pass token=, --token-file or "
                                                   f"${ENV_TOKEN_FILE} (see `chainfs user add`)")
    ident = _verified.get(token)
    if ident is None or (ident.expires and ident.expires < time.time()):
        ident = verify(sec, token)
        with _lock:
            if len(_verified) >= MAX_VERIFIED:
                _verified.clear()
            _verified[token] = ident
    return ident


def bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text[7:].strip() if text.startswith("Bearer ") else text.strip()
    return None


def identity_of(context: grpc.ServicerContext) -> Identity | None:
    """The caller of a running RPC (None when this server checks nothing)."""
    if _secret is None:
        return None
    return check(bearer(context.invocation_metadata()))


# ---- the checks ----

def request_paths(message: Any) -> list[str]:
    """Every path a Namespace request names (its path/src/dst/paths fields, nested included)."""
    out: list[str] = []
    for field, value in message.ListFields():
        if field.name in PATH_FIELDS:
            out.extend([value] if isinstance(value, str) else list(value))
        elif field.message_type is not None:
            # one message or a repeated field of them (not by field.label: protobuf 7 dropped it)
            for item in ([value] if hasattr(value, "ListFields") else value):
                out.extend(request_paths(item))
    return out


def authorize(method: str, ident: Identity) -> None:
    """PERMISSION_DENIED unless `ident` may call `method` at all."""
    if method in NODE_ONLY and not ident.is_node:
        raise ChainfsError(Reason.PERMISSION_DENIED, f"{method.rsplit('/', 1)[1]} needs a node token, "
                                                     f"not the user token of {ident.name}")
    if method in ADMIN:
        require_admin(ident, method.rsplit('/', 1)[1])


def require_admin(ident: Identity | None, what: str) -> None:
    """PERMISSION_DENIED unless a node or a root user calls (None: this server checks no tokens)."""
    if ident is not None and not (ident.is_node or ident.root):
        raise ChainfsError(Reason.PERMISSION_DENIED, f"{what} needs a root token, not the user token of {ident.name}")


def authorize_paths(method: str, ident: Identity, request: Any) -> None:
    if ident.prefix and not ident.root and method.startswith("/chainfs.Namespace/"):
        for path in request_paths(request):
            if not ident.may_touch(path):
                raise ChainfsError(Reason.PERMISSION_DENIED,
                                   f"token of {ident.name} is limited to {ident.prefix}: {path}")


def principal(ident: Identity | None) -> str:
    """Who a session belongs to: `kind:name` of the caller's token ("" when no tokens are checked)."""
    return "" if ident is None else f"{ident.kind}:{ident.name}"


def check_owner(owner: str, caller: str, what: str) -> None:
    """A write session is renewed and closed only by whoever opened it (its token's kind and
    name), so a guessed or leaked session id is useless to another token, root included."""
    if owner and caller != owner:
        raise ChainfsError(Reason.PERMISSION_DENIED, f"{what} belongs to {owner}, not {caller or 'an anonymous caller'}")


def check_forward(header: Any, ident: Identity | None) -> None:
    """A write header carrying a head's pending version (`version`, `from_target`) is a forward
    along a chain: only a node may send one (a client would overwrite a replica behind the head)."""
    if ident is not None and not ident.is_node and (header.version or header.from_target):
        raise ChainfsError(Reason.PERMISSION_DENIED, f"forwarded writes need a node token, not the "
                                                     f"user token of {ident.name}")


class ServerAuth(grpc.ServerInterceptor):
    """Refuses calls without a valid token (UNAUTHENTICATED) and calls outside the token's rights
    (PERMISSION_DENIED), before the handler runs; installed by `common.rpc.make_server` and a
    no-op while the process has no secret."""

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or _secret is None or details.method in OPEN:
            return handler
        method = details.method
        kind = handler_kind(handler)
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        try:
            ident = check(bearer(details.invocation_metadata))
            authorize(method, ident)
        except ChainfsError as exc:
            failure = exc

            def refuse(request: Any, context: grpc.ServicerContext) -> Any:
                abort(context, failure.reason, failure.message)

            return make(refuse, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
        if handler.request_streaming or not (ident.prefix and method.startswith("/chainfs.Namespace/")):
            return handler
        behavior = getattr(handler, kind)

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if not isinstance(request, Malformed):  # which the handler refuses (common/decoding.py)
                    authorize_paths(method, ident, request)
            except ChainfsError as exc:
                abort(context, exc.reason, exc.message)
            return behavior(request, context)

        return make(checked, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


class _ClientAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to every call of one channel."""

    def __init__(self, token: str) -> None:
        self._pair = (METADATA_KEY, f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ()) + [self._pair]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):  # type: ignore[no-untyped-def]
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """`channel`, its calls carrying `token` (unchanged when there is none)."""
    return channel if not token else grpc.intercept_channel(channel, _ClientAuth(token))


# ---- server processes ----

def add_server_args(parser: Any) -> None:
    parser.add_argument("--secret-file", default=None,
                        help="the cluster secret (mode 0600): calls are checked against it")
    parser.add_argument("--token-file", default=None,
                        help="this process's own token for the calls it makes (default: a node "
                             "token it signs itself with --secret-file)")
    parser.add_argument("--insecure", action="store_true",
                        help="serve without checking tokens (no --secret-file)")


def configure_from_args(args: Any, name: str) -> None:
    """Loads --secret-file/--token-file; refuses (ValueError) a server with neither a secret nor
    --insecure."""
    path = getattr(args, "secret_file", None)
    if not path:
        if not getattr(args, "insecure", False):
            raise ValueError("no --secret-file: refusing to serve unauthenticated (pass --insecure "
                             "to do so on purpose)")
        set_secret(None)
    else:
        set_secret(load_secret(path))
    token_file = getattr(args, "token_file", None)
    if token_file:
        set_process_token(read_token_file(token_file))
    elif _secret is not None:
        set_process_token(issue(_secret, "node", name))
