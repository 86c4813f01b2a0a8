"""Path rules shared by the client and the metaserver: absolute, normalized, bounded."""

from __future__ import annotations

from chainfs.common.errors import ChainfsError, Reason, make_exception

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 256


def split_path(path: str) -> list[str]:
    """The components of a normalized absolute path; [] is the root.

    Accepts '/a//b/./c' and 'a/b' (taken from the root); '..' is resolved lexically but may never
    climb above the root. Raises ChainfsError(INVALID_ARGUMENT or NAME_TOO_LONG).
    """
    if _is_canonical(path):
        return path[1:].split("/")
    if not isinstance(path, str):
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"path must be a string, not {type(path).__name__}")
    if "\x00" in path:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"path contains a NUL byte: {path!r}")
    try:
        encoded_len = len(path.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"path is not valid UTF-8: {path!r}") from exc
    if encoded_len > MAX_PATH_BYTES:
        raise ChainfsError(Reason.NAME_TOO_LONG, f"path longer than {MAX_PATH_BYTES} bytes")
    parts: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise ChainfsError(Reason.INVALID_ARGUMENT, f"path escapes the root: {path!r}")
            parts.pop()
            continue
        parts.append(validate_name(name))
    if len(parts) > MAX_DEPTH:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"path deeper than {MAX_DEPTH} levels")
    return parts


def join_parts(parts: list[str]) -> str:
    """The path of split components: '/' or '/a/b'."""
    return "/" + "/".join(parts)


def normalize(path: str) -> str:
    """The canonical form of a path: '/' or '/a/b'."""
    if _is_canonical(path):  # most paths already are (a KV lookup sends dozens per call)
        return path
    return join_parts(split_path(path))


def _is_canonical(path: object) -> bool:
    """Whether `path` is already what `normalize` returns, judged without splitting it: absolute,
    no empty, '.' or '..' names, no NUL, short enough that no name or depth limit can bite."""
    return (isinstance(path, str) and len(path) > 1 and path[0] == "/" and path[-1] != "/"
            and path.isascii() and len(path) <= MAX_NAME_BYTES and "//" not in path
            and "/." not in path and "\x00" not in path)


def validate_name(name: str) -> str:
    """A single directory entry name (no separators, not '.' or '..', at most MAX_NAME_BYTES);
    `split_path` checks each component with it."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"invalid name: {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ChainfsError(Reason.NAME_TOO_LONG, f"name longer than {MAX_NAME_BYTES} bytes: {name[:40]}...")
    return name


def checked_path(path: str) -> str:
    """`normalize` for clients: bad input fails before any RPC, as the built-in exception of its reason."""
    try:
        return normalize(path)
    except ChainfsError as exc:
        raise make_exception(exc.reason, exc.message, path) from exc
