"""Chunk files on the storage nodes' disks, for tests that damage one replica's copy."""

from __future__ import annotations

from pathlib import Path

from chainfs.client import ChainClient
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2 as spb


def replica_file(chain: mpb.ChainInfo, inode: mpb.Inode, index: int, replica: int) -> Path:
    """The committed chunk file of one replica (position in the chain) of chunk `index`."""
    shard = Path(chain.targets[replica].path) / "chunks" / f"{inode.id % 256:02x}"
    name = f"{inode.id:016x}-{index:08x}.v"
    (path,) = [p for p in shard.iterdir() if p.name.startswith(name) and not p.name.endswith(".new")]
    return path


def rot(path: Path, at: int) -> None:
    """Flips the bits of one byte, as a disk that rots would."""
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(raw)


def chunk_metas(client: ChainClient, path: str) -> dict[int, list[list[spb.ChunkMeta]]]:
    """For each chain of the file: per replica (chain order), that replica's chunks of the file."""
    inode = client.stat(path)
    result: dict[int, list[list[spb.ChunkMeta]]] = {}
    for chain_id in dict.fromkeys(inode.layout.chains):
        chain = client.routing.chain(chain_id)
        result[chain_id] = [client.storage.list_chunks(chain_id, r, inode.id) for r in range(len(chain.targets))]
    return result
