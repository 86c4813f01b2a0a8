"""Layout rules: inheriting directory defaults, validating them, and picking a new file's chains.

Why here and not in the namespace: the rules are pure functions of their inputs, tested without a
store, and the namespace's mkdir, create and SetLayout share them.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.proto import meta_pb2 as pb


class ChainSource(Protocol):
    """Where new files get their chains from (the cluster manager)."""

    def chain_lengths(self) -> Sequence[tuple[int, int]]:
        """(chain id, number of targets) of every chain, sorted by chain id."""
        ...


def merge_layout(base: pb.Layout, override: pb.Layout | None) -> pb.Layout:
    """`base` with every nonzero field of `override` on top; chains are never inherited."""
    out = pb.Layout(
        chunk_size=base.chunk_size,
        stripe_width=base.stripe_width,
        replication=base.replication,
    )
    if override is not None:
        if override.chunk_size:
            out.chunk_size = override.chunk_size
        if override.stripe_width:
            out.stripe_width = override.stripe_width
        if override.replication:
            out.replication = override.replication
    return out


def validate_layout(layout: pb.Layout, path: str) -> pb.Layout:
    cs = layout.chunk_size
    if not config.is_power_of_two(cs) or not config.MIN_CHUNK_SIZE <= cs <= config.MAX_CHUNK_SIZE:
        raise ChainfsError(
            Reason.INVALID_ARGUMENT,
            f"chunk_size {cs} must be a power of two in "
            f"[{config.MIN_CHUNK_SIZE}, {config.MAX_CHUNK_SIZE}]: {path}",
        )
    if layout.stripe_width < 1:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"stripe_width must be >= 1: {path}")
    if layout.replication < 1:
        raise ChainfsError(Reason.INVALID_ARGUMENT, f"replication must be >= 1: {path}")
    return layout


def default_layout(replication: int) -> pb.Layout:
    return pb.Layout(
        chunk_size=config.DEFAULT_CHUNK_SIZE,
        stripe_width=config.DEFAULT_STRIPE_WIDTH,
        replication=replication,
    )


def pick_chains(chains: Sequence[tuple[int, int]], inode_id: int, layout: pb.Layout, path: str) -> list[int]:
    """The stripe of a new file: `stripe_width` consecutive chains starting at inode_id % n.

    `chains` is (chain id, chain length) sorted by id. Chains whose length equals the layout's
    replication are preferred; when there is none, any chain is used (a cluster with fewer nodes
    than the replication asked for still stores data, with fewer replicas). The stripe is capped
    at the number of chains. No chain at all -> NO_CHAINS (retryable: nodes may still register).
    """
    matching = [cid for cid, length in chains if length == layout.replication]
    pool = matching or [cid for cid, _ in chains]
    if not pool:
        raise ChainfsError(Reason.NO_CHAINS, f"no storage chains available yet: {path}")
    n = len(pool)
    start = inode_id % n
    width = min(layout.stripe_width, n)
    return [pool[(start + i) % n] for i in range(width)]
