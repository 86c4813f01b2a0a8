"""What a replication chain's routing entry says, read the same way by clients and storage nodes."""

from __future__ import annotations

from typing import Iterable

from chainfs.proto import meta_pb2 as mpb


def serving_targets(targets: Iterable[mpb.TargetInfo]) -> list[mpb.TargetInfo]:
    """The targets that serve reads, in chain order."""
    return [t for t in targets if t.state == mpb.SERVING]


def head_target(targets: Iterable[mpb.TargetInfo]) -> mpb.TargetInfo | None:
    """The chain's head, where writes enter: its first SERVING target (None: no target serves)."""
    return next((t for t in targets if t.state == mpb.SERVING), None)
