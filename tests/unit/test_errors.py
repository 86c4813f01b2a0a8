"""The status-to-exception table: every reason maps to a built-in exception carrying the path."""

from __future__ import annotations

import errno

import grpc
import pytest

from chainfs.common.errors import REASON_KEY, RULES, Reason, is_retryable, make_exception, reason_of, to_exception


class FakeRpcError(grpc.RpcError):
    """A failed call as grpc presents it: a code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str | None = None) -> None:
        self._code, self._details = code, details
        self._trailing = ((REASON_KEY, reason),) if reason else ()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailing


@pytest.mark.parametrize("reason, exc_type, err", [
    (Reason.NOT_FOUND, FileNotFoundError, errno.ENOENT),
    (Reason.EXISTS, FileExistsError, errno.EEXIST),
    (Reason.NOT_A_DIRECTORY, NotADirectoryError, errno.ENOTDIR),
    (Reason.IS_A_DIRECTORY, IsADirectoryError, errno.EISDIR),
    (Reason.NOT_EMPTY, OSError, errno.ENOTEMPTY),
    (Reason.NAME_TOO_LONG, OSError, errno.ENAMETOOLONG),
    (Reason.PERMISSION_DENIED, PermissionError, errno.EACCES),
    (Reason.CHECKSUM_MISMATCH, OSError, errno.EIO),
    (Reason.TIMEOUT, TimeoutError, errno.ETIMEDOUT),
    (Reason.UNAVAILABLE, ConnectionError, errno.ECONNREFUSED),
])
def test_reason_maps_to_builtin_with_path(reason: Reason, exc_type: type, err: int) -> None:
    rpc_error = FakeRpcError(RULES[reason].code, "went wrong", reason.value)
    exc = to_exception(rpc_error, "/a/b")
    assert type(exc) is exc_type
    assert exc.errno == err
    assert exc.filename == "/a/b"
    assert "went wrong" in str(exc)


def test_invalid_argument_is_value_error_naming_the_path() -> None:
    exc = make_exception(Reason.INVALID_ARGUMENT, "bad offset", "/x")
    assert isinstance(exc, ValueError) and "/x" in str(exc)


def test_reason_falls_back_on_status_code() -> None:
    assert reason_of(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "conn refused")) == Reason.UNAVAILABLE
    assert reason_of(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")) == Reason.TIMEOUT
    assert reason_of(FakeRpcError(grpc.StatusCode.UNKNOWN, "?")) == Reason.INTERNAL
    assert reason_of(FakeRpcError(grpc.StatusCode.INTERNAL, "x", "no-such-reason")) == Reason.INTERNAL


def test_every_reason_has_a_rule_and_retryable_ones_are_transient() -> None:
    assert set(RULES) == set(Reason)
    assert is_retryable(Reason.STALE_ROUTING) and is_retryable(Reason.PENDING)
    assert not is_retryable(Reason.NOT_FOUND) and not is_retryable(Reason.CHECKSUM_MISMATCH)
