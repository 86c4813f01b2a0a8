"""Chunk files on the storage nodes' disks, for tests that damage one replica's copy."""

from __future__ import annotations

from pathlib import Path

from chainfs.proto import meta_pb2 as mpb


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
