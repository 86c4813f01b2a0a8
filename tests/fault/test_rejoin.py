"""Nodes that come back: after overwrites and deletes they missed, and after a whole chain died."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from chainfs.cluster.process import wait_for
from chainfs.proto import meta_pb2 as mpb

from tests.fault.harness import CHUNK, WAIT, client, make_cluster, node_index, states, the_chain, wait_fsck_clean, wait_state

pytestmark = pytest.mark.fault


def test_node_down_during_overwrites_and_deletes(tmp_path: Path) -> None:
    rnd = random.Random(3)
    with make_cluster(tmp_path / "c") as cluster:
        c = client(cluster)
        c.mkdir("/d", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        files = {f"/d/f{i}": rnd.randbytes(rnd.randint(1, 3 * CHUNK)) for i in range(12)}
        old_inodes = {path: c.write_file(path, data).id for path, data in files.items()}
        victim = the_chain(cluster).targets[1].node_id
        index = node_index(cluster, victim)
        cluster.kill_storage(index)
        wait_state(cluster, victim, mpb.OFFLINE)

        for i in range(0, 12, 3):  # overwrite (new inode; the old one is garbage)
            files[f"/d/f{i}"] = rnd.randbytes(rnd.randint(1, 3 * CHUNK))
            c.write_file(f"/d/f{i}", files[f"/d/f{i}"])
        for i in range(1, 12, 3):  # delete
            c.rm(f"/d/f{i}")
            del files[f"/d/f{i}"]
        files["/d/new"] = rnd.randbytes(2 * CHUNK + 5)
        c.write_file("/d/new", files["/d/new"])
        gone = {inode for path, inode in old_inodes.items() if path not in files or int(path[4:]) % 3 == 0}

        def live_replicas_collected() -> bool:  # the collector ran on the serving replicas
            return all(not any(m.chunk.inode in gone for m in c.storage.list_chunks(the_chain(cluster).chain_id, r))
                       for r in range(2))

        wait_for(live_replicas_collected, WAIT, "garbage collection on the live replicas", interval=0.2)

        cluster.restart_storage(index)
        cluster.wait_healthy(WAIT)
        chain = the_chain(cluster)
        lists = [sorted((m.chunk.inode, m.chunk.index, m.version, m.length, m.crc)
                        for m in c.storage.list_chunks(chain.chain_id, r)) for r in range(3)]
        assert lists[0] == lists[1] == lists[2], "the returning node's chunks differ from its peers'"
        assert not any(inode in gone for inode, *_ in lists[2]), "deleted chunks survived on the returning node"
        for path, data in files.items():
            for replica in range(3):
                assert c.read_file(path, replica=replica) == data
        wait_fsck_clean(cluster)


@pytest.mark.parametrize("lastsrv_first", [False, True], ids=["lastsrv-last", "lastsrv-first"])
def test_whole_chain_killed_then_restarted(tmp_path: Path, lastsrv_first: bool) -> None:
    rnd = random.Random(4)
    with make_cluster(tmp_path / "c") as cluster:
        c = client(cluster)
        c.mkdir("/l", layout=mpb.Layout(chunk_size=CHUNK, stripe_width=1))
        acked: dict[str, bytes] = {}

        def write(name: str) -> None:
            data = rnd.randbytes(rnd.randint(1, 2 * CHUNK))
            c.write_file(f"/l/{name}", data)
            acked[f"/l/{name}"] = data

        order = [t.node_id for t in the_chain(cluster).targets]  # kill head, then middle, then tail
        write("all3")
        for k, node in enumerate(order):
            cluster.kill_storage(node_index(cluster, node))
            last = k == len(order) - 1
            wait_state(cluster, node, mpb.LASTSRV if last else mpb.OFFLINE)
            if not last:
                write(f"after-kill-{k}")  # acknowledged by the survivors only
        assert sorted(states(cluster).values()) == sorted([mpb.LASTSRV, mpb.OFFLINE, mpb.OFFLINE])

        lastsrv = order[-1]
        if lastsrv_first:
            cluster.restart_storage(node_index(cluster, lastsrv))
            wait_state(cluster, lastsrv, mpb.SERVING)
            for node in order[:-1]:
                cluster.restart_storage(node_index(cluster, node))
        else:
            for node in order[:-1]:  # the others return first: no serving without the lastsrv
                cluster.restart_storage(node_index(cluster, node))
            for node in order[:-1]:
                wait_state(cluster, node, mpb.WAITING)
            assert states(cluster)[lastsrv] == mpb.LASTSRV
            assert mpb.SERVING not in states(cluster).values()
            cluster.restart_storage(node_index(cluster, lastsrv))
        cluster.wait_healthy(WAIT)
        assert the_chain(cluster).targets[0].node_id == lastsrv
        for path, data in acked.items():
            for replica in range(3):
                assert c.read_file(path, replica=replica) == data, f"{path} lost on replica {replica}"
        wait_fsck_clean(cluster)
