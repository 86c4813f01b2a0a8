"""SIGSTOP a node past the heartbeat timeout: it fences itself, never serves a stale read after
SIGCONT, resyncs and serves again."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from chainfs.common.rpc import ChannelPool
from chainfs.cluster.process import wait_for
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb
from chainfs.proto import storage_pb2_grpc as spb_grpc

from tests.fault.harness import (
    CHUNK, REG_BYTES, WAIT, client, make_cluster, node_index, tag_of, the_chain, value_bytes,
    wait_fsck_clean, wait_state,
)

pytestmark = pytest.mark.fault


def direct_read(stub: spb_grpc.StorageStub, chain_id: int, chain_version: int, inode: int,
                cap: str = "") -> tuple[int, str]:
    """One Read straight to a node (no client retries): (item status, tag read or "")."""
    item = spb.ReadItem(chain_id=chain_id, chain_version=chain_version, chunk=spb.ChunkId(inode=inode, index=0),
                        offset=0, length=REG_BYTES)
    status, data = None, bytearray()
    for reply in stub.Read(spb.ReadRequest(items=[item], capabilities=[cap] if cap else []), timeout=10):
        if reply.HasField("header"):
            status = reply.header.status
        else:
            data.extend(reply.data)
    assert status is not None
    return status, tag_of(bytes(data)) if status == spb.OK else ""


@pytest.mark.parametrize("role", [1, 2], ids=["middle", "tail"])
def test_paused_node_fences_and_never_serves_stale(tmp_path: Path, role: int) -> None:
    with make_cluster(tmp_path / "c") as cluster:
        c = client(cluster)
        c.mkdir("/p", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        inode = c.write_file("/p/reg", value_bytes("old"))
        chain = the_chain(cluster)
        victim = chain.targets[role]
        address = next(n.address for n in cluster.routing().nodes if n.node_id == victim.node_id)
        stub = spb_grpc.StorageStub(ChannelPool().get(address))
        assert direct_read(stub, chain.chain_id, chain.version, inode.id, c.stat("/p/reg").capability) == (spb.OK, "old")

        index = node_index(cluster, victim.node_id)
        cluster.pause_storage(index)
        try:
            wait_state(cluster, victim.node_id, mpb.OFFLINE)
            c.storage.write_chunk(chain.chain_id, inode.id, 0, value_bytes("new"), CHUNK)  # acknowledged
            new_version = the_chain(cluster).version
        finally:
            cluster.resume_storage(index)

        # From SIGCONT on: whatever version the reader believes in, never the old value.
        cap = c.stat("/p/reg").capability
        seen: list[tuple[int, str]] = []

        def serving_new() -> bool:
            for version in (chain.version, new_version, the_chain(cluster).version):
                try:
                    status, tag = direct_read(stub, chain.chain_id, version, inode.id, cap)
                except grpc.RpcError:
                    continue
                seen.append((status, tag))
                assert tag != "old", f"stale read from the resumed node: {seen}"
                if status == spb.OK and tag == "new":
                    return True
            return False

        wait_for(serving_new, WAIT, "the resumed node to resync and serve the new value", interval=0.05)
        assert seen[0][0] != spb.OK, f"the resumed node served before resync: {seen[:3]}"
        cluster.wait_healthy(WAIT)
        assert the_chain(cluster).targets[-1].node_id == victim.node_id
        assert c.read_file("/p/reg", replica=2) == value_bytes("new")
        wait_fsck_clean(cluster)
