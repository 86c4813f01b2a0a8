"""The one table that maps chainfs failures to gRPC statuses and to Python's built-in exceptions.

Servers abort with `abort(context, Reason.X, message)`: the gRPC code comes from the table and the
machine-readable reason travels in the trailing metadata key `chainfs-reason`. Clients turn a
`grpc.RpcError` back into the built-in exception with `to_exception(err, path)`.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass
from typing import NoReturn

import grpc

REASON_KEY = "chainfs-reason"


class Reason(str, enum.Enum):
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    NOT_A_DIRECTORY = "not_a_directory"
    IS_A_DIRECTORY = "is_a_directory"
    NOT_EMPTY = "not_empty"
    INVALID_ARGUMENT = "invalid_argument"
    NAME_TOO_LONG = "name_too_long"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    TOO_LARGE = "too_large"
    NO_SPACE = "no_space"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    IO_ERROR = "io_error"
    SESSION_EXPIRED = "session_expired"
    NO_CHAINS = "no_chains"
    # Retryable: the client refreshes routing and/or tries again.
    STALE_ROUTING = "stale_routing"
    PENDING = "pending"
    NOT_SERVING = "not_serving"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


@dataclass(frozen=True)
class _Rule:
    code: grpc.StatusCode
    exception: type[Exception]
    errno: int | None
    retryable: bool = False


# The table. Every failure a user can see is one row here.
RULES: dict[Reason, _Rule] = {
    Reason.NOT_FOUND: _Rule(grpc.StatusCode.NOT_FOUND, FileNotFoundError, errno.ENOENT),
    Reason.EXISTS: _Rule(grpc.StatusCode.ALREADY_EXISTS, FileExistsError, errno.EEXIST),
    Reason.NOT_A_DIRECTORY: _Rule(grpc.StatusCode.FAILED_PRECONDITION, NotADirectoryError, errno.ENOTDIR),
    Reason.IS_A_DIRECTORY: _Rule(grpc.StatusCode.FAILED_PRECONDITION, IsADirectoryError, errno.EISDIR),
    Reason.NOT_EMPTY: _Rule(grpc.StatusCode.FAILED_PRECONDITION, OSError, errno.ENOTEMPTY),
    Reason.INVALID_ARGUMENT: _Rule(grpc.StatusCode.INVALID_ARGUMENT, ValueError, None),
    Reason.NAME_TOO_LONG: _Rule(grpc.StatusCode.INVALID_ARGUMENT, OSError, errno.ENAMETOOLONG),
    Reason.PERMISSION_DENIED: _Rule(grpc.StatusCode.PERMISSION_DENIED, PermissionError, errno.EACCES),
    # No token, or one this cluster did not sign (or expired): PermissionError, like a denial,
    # its message says which (`common.auth`).
    Reason.UNAUTHENTICATED: _Rule(grpc.StatusCode.UNAUTHENTICATED, PermissionError, errno.EACCES),
    Reason.TOO_LARGE: _Rule(grpc.StatusCode.RESOURCE_EXHAUSTED, OSError, errno.EFBIG),
    Reason.NO_SPACE: _Rule(grpc.StatusCode.RESOURCE_EXHAUSTED, OSError, errno.ENOSPC),
    Reason.CHECKSUM_MISMATCH: _Rule(grpc.StatusCode.DATA_LOSS, OSError, errno.EIO),
    Reason.IO_ERROR: _Rule(grpc.StatusCode.INTERNAL, OSError, errno.EIO),
    Reason.SESSION_EXPIRED: _Rule(grpc.StatusCode.FAILED_PRECONDITION, OSError, errno.ESTALE),
    Reason.NO_CHAINS: _Rule(grpc.StatusCode.UNAVAILABLE, ConnectionError, errno.EAGAIN, retryable=True),
    Reason.STALE_ROUTING: _Rule(grpc.StatusCode.ABORTED, ConnectionError, errno.EAGAIN, retryable=True),
    Reason.PENDING: _Rule(grpc.StatusCode.UNAVAILABLE, ConnectionError, errno.EAGAIN, retryable=True),
    Reason.NOT_SERVING: _Rule(grpc.StatusCode.UNAVAILABLE, ConnectionError, errno.EAGAIN, retryable=True),
    Reason.BUSY: _Rule(grpc.StatusCode.UNAVAILABLE, ConnectionError, errno.EBUSY, retryable=True),
    Reason.UNAVAILABLE: _Rule(grpc.StatusCode.UNAVAILABLE, ConnectionError, errno.ECONNREFUSED, retryable=True),
    Reason.TIMEOUT: _Rule(grpc.StatusCode.DEADLINE_EXCEEDED, TimeoutError, errno.ETIMEDOUT, retryable=True),
    Reason.INTERNAL: _Rule(grpc.StatusCode.INTERNAL, OSError, errno.EIO),
}

# Statuses that arrive without a chainfs reason (from gRPC itself, or a crashed peer).
_CODE_FALLBACK: dict[grpc.StatusCode, Reason] = {
    grpc.StatusCode.UNAVAILABLE: Reason.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Reason.TIMEOUT,
    grpc.StatusCode.CANCELLED: Reason.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Reason.TOO_LARGE,
    grpc.StatusCode.INVALID_ARGUMENT: Reason.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: Reason.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: Reason.EXISTS,
    grpc.StatusCode.PERMISSION_DENIED: Reason.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED: Reason.UNAUTHENTICATED,
    grpc.StatusCode.DATA_LOSS: Reason.CHECKSUM_MISMATCH,
}


class ChainfsError(Exception):
    """Raised inside servers to carry a reason up to the handler layer, which aborts with it."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def abort(context: grpc.ServicerContext, reason: Reason, message: str) -> NoReturn:
    context.set_trailing_metadata(((REASON_KEY, reason.value),))
    context.abort(RULES[reason].code, message)
    raise AssertionError("unreachable")  # context.abort raises


def reason_of(err: grpc.RpcError) -> Reason:
    """The chainfs reason of a failed call, falling back on its status code."""
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == REASON_KEY:
            try:
                return Reason(value)
            except ValueError:
                break
    code = err.code() if hasattr(err, "code") else None
    return _CODE_FALLBACK.get(code, Reason.INTERNAL)


def is_retryable(reason: Reason) -> bool:
    return RULES[reason].retryable


def make_exception(reason: Reason, message: str, path: str | None = None) -> Exception:
    rule = RULES[reason]
    if rule.errno is None:
        return rule.exception(f"{message}: {path}" if path else message)
    if path is None:
        return rule.exception(rule.errno, message)
    return rule.exception(rule.errno, message, path)


def to_exception(err: grpc.RpcError, path: str | None = None) -> Exception:
    """The built-in exception for a failed RPC, naming `path` when one is given."""
    reason = reason_of(err)
    details = err.details() if hasattr(err, "details") else str(err)
    return make_exception(reason, details or reason.value, path)
