"""Every namespace error reaches the caller as the right built-in exception naming the path."""

from __future__ import annotations

import errno

import pytest

from chainfs.client import ChainClient
from chainfs.proto import meta_pb2 as mpb

pytestmark = pytest.mark.integration


@pytest.fixture()
def tree(client: ChainClient) -> ChainClient:
    if _exists(client, "/ns"):
        client.rm("/ns", recursive=True)
    client.mkdir("/ns/dir/sub", parents=True)
    client.write_file("/ns/file", b"hello")
    return client


def _exists(client: ChainClient, path: str) -> bool:
    try:
        client.stat(path)
        return True
    except FileNotFoundError:
        return False


def _raises(exc_type: type[BaseException], path: str, fn, *args, code: int | None = None, **kwargs) -> None:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert path in str(info.value), f"{info.value!r} does not name {path}"
    if code is not None:
        assert info.value.errno == code


def test_not_found(tree: ChainClient) -> None:
    _raises(FileNotFoundError, "/ns/missing", tree.stat, "/ns/missing")
    _raises(FileNotFoundError, "/ns/missing/x", tree.ls, "/ns/missing/x")
    _raises(FileNotFoundError, "/ns/nope", tree.rm, "/ns/nope")
    _raises(FileNotFoundError, "/ns/nope", tree.rename, "/ns/nope", "/ns/other")
    _raises(FileNotFoundError, "/ns/a/b", tree.mkdir, "/ns/a/b")


def test_exists(tree: ChainClient) -> None:
    _raises(FileExistsError, "/ns/dir", tree.mkdir, "/ns/dir")
    _raises(FileExistsError, "/ns/file", tree.meta.create, "/ns/file", exclusive=True)
    _raises(FileExistsError, "/ns/file", tree.open_writer, "/ns/file", mode=mpb.CREATE_NEW)


def test_not_a_directory(tree: ChainClient) -> None:
    _raises(NotADirectoryError, "/ns/file/x", tree.stat, "/ns/file/x")
    _raises(NotADirectoryError, "/ns/file", tree.ls, "/ns/file")
    _raises(NotADirectoryError, "/ns/file/x", tree.mkdir, "/ns/file/x")
    _raises(NotADirectoryError, "/ns/dir", tree.rename, "/ns/dir", "/ns/file")


def test_is_a_directory(tree: ChainClient) -> None:
    _raises(IsADirectoryError, "/ns/dir", tree.write_file, "/ns/dir", b"x")
    _raises(IsADirectoryError, "/ns/file", tree.rename, "/ns/file", "/ns/dir")
    _raises(IsADirectoryError, "/ns/dir", tree.read_file, "/ns/dir")


def test_not_empty_and_subtree(tree: ChainClient) -> None:
    _raises(OSError, "/ns/dir", tree.rm, "/ns/dir", code=errno.ENOTEMPTY)
    _raises(ValueError, "/ns/dir", tree.rename, "/ns/dir", "/ns/dir/sub/inside")


def test_invalid_paths(tree: ChainClient) -> None:
    _raises(ValueError, "/..", tree.stat, "/..")
    _raises(ValueError, "a\x00b", tree.mkdir, "/a\x00b")
    long_name = "/" + "n" * 256
    _raises(OSError, long_name, tree.write_file, long_name, b"x", code=errno.ENAMETOOLONG)
    _raises(ValueError, "/", tree.rm, "/", recursive=True)


def test_listing_pages_and_recursive_remove(tree: ChainClient) -> None:
    for i in range(25):
        tree.meta.create(f"/ns/dir/f{i:03d}")
    first = tree.meta.list_page("/ns/dir", limit=10)
    assert len(first.entries) == 10 and first.more
    names = [e.name for e in tree.meta.list("/ns/dir", page_size=7)]
    assert names == sorted([f"f{i:03d}" for i in range(25)] + ["sub"])
    tree.rm("/ns", recursive=True)
    _raises(FileNotFoundError, "/ns", tree.stat, "/ns")


def test_rename_replaces_file_atomically(tree: ChainClient) -> None:
    tree.write_file("/ns/new", b"new content")
    tree.rename("/ns/new", "/ns/file")
    assert tree.read_file("/ns/file") == b"new content"
    _raises(FileNotFoundError, "/ns/new", tree.stat, "/ns/new")
    tree.rename("/ns/dir", "/ns/moved")
    assert tree.stat("/ns/moved/sub").type == mpb.DIRECTORY
