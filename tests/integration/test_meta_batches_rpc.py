"""Batched metadata over a real cluster: many files cost one metadata RPC (counted at the client)."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from chainfs.proto import meta_pb2 as mpb
from metacount import meta_rpcs  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


@pytest.fixture()
def fs(cluster):
    host, port = cluster.address.rsplit(":", 1)
    return fsspec.filesystem("chainfs", host=host, port=int(port))


def test_pipe_cat_and_info_of_many_files_cost_one_rpc_each(fs, cluster, meta_rpcs, rng_bytes) -> None:
    root = f"/batch-{uuid.uuid4().hex[:8]}"
    files = {f"{root}/{k % 4}/{k:03d}": rng_bytes(1000 + 37 * k, seed=k + 1) for k in range(64)}
    files[f"{root}/big"] = rng_bytes(9 << 20, seed=99)  # several 4 MiB chunks on several chains
    files[f"{root}/empty"] = b""
    meta_rpcs.reset()
    fs.pipe(files)
    assert meta_rpcs.namespace_calls() == {"OpenWriteMany": 1, "CloseWriteMany": 1}

    paths = list(files)
    meta_rpcs.reset()
    got = fs.cat(paths)
    assert meta_rpcs.namespace_calls() == {"StatMany": 1}
    assert got == files

    meta_rpcs.reset()
    ranges = fs.cat_ranges(paths + [f"{root}/missing"], [1] * 67, [900] * 67)
    assert meta_rpcs.namespace_calls() == {"StatMany": 1}
    assert ranges[:-1] == [v[1:900] for v in files.values()]
    assert isinstance(ranges[-1], FileNotFoundError)

    meta_rpcs.reset()
    infos = fs.info_many(paths + [f"{root}/0", f"{root}/missing", f"{root}/big/x"])
    assert meta_rpcs.namespace_calls() == {"StatMany": 1}
    assert [i["size"] for i in infos[:len(paths)]] == [len(v) for v in files.values()]
    assert infos[-3]["type"] == "directory"
    assert isinstance(infos[-2], FileNotFoundError) and isinstance(infos[-1], NotADirectoryError)


def test_batched_pipe_create_mode_and_per_file_failures(fs, client) -> None:
    root = f"/batch-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(f"{root}/taken", b"old")
    fs.mkdir(f"{root}/dir")
    results = client.write_files({f"{root}/a": b"A" * 10, f"{root}/taken": b"new", f"{root}/dir": b"x",
                                  f"{root}/b": b"B"}, mode=mpb.CREATE_NEW)
    assert [type(r).__name__ for r in results] == ["Inode", "FileExistsError", "IsADirectoryError", "Inode"]
    assert fs.cat([f"{root}/a", f"{root}/taken", f"{root}/b"]) == {
        f"{root}/a": b"A" * 10, f"{root}/taken": b"old", f"{root}/b": b"B"}
    with pytest.raises(FileExistsError):
        fs.pipe({f"{root}/c": b"c", f"{root}/taken": b"new"}, mode="create")
    assert fs.cat_file(f"{root}/c") == b"c" and fs.cat_file(f"{root}/taken") == b"old"
