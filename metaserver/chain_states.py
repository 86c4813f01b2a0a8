"""3FS's target state transition table, as a pure function over one chain.

See docs/architecture.md, "Failures: detection, chain reconfiguration, resync".

Why pure: the table is the heart of failure handling and must be testable without a store, a
clock or processes. The cluster manager feeds it each target's public state and local state (what
the node reports, or OFFLINE when the node is silent past the heartbeat timeout) and writes back
whatever changed, bumping the chain version.

The table (3FS docs/design_notes.md), local state x current public state -> next public state:

    up-to-date: serving->serving, syncing->serving, waiting->waiting, lastsrv->serving, offline->waiting
    online:     serving->serving, lastsrv->serving, offline->waiting,
                syncing/waiting -> syncing if the predecessor is serving, else waiting
    offline:    serving -> lastsrv when no serving target is left (only the first such one),
                           else offline;
                syncing/waiting/offline -> offline; lastsrv -> lastsrv

Order after a change: serving targets (in their old order), then syncing, waiting, lastsrv and
offline ones, so a target that went offline moves to the end of its chain and the predecessor of
the first non-serving target is the last serving one. Only that first target may sync, which
keeps one syncing target per chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from chainfs.proto import meta_pb2 as pb

SERVING, SYNCING, WAITING, LASTSRV, OFFLINE = pb.SERVING, pb.SYNCING, pb.WAITING, pb.LASTSRV, pb.OFFLINE
UPTODATE, ONLINE, OFFLINE_LOCAL = pb.UPTODATE, pb.ONLINE, pb.OFFLINE_LOCAL
UNKNOWN = pb.LOCAL_STATE_UNSPECIFIED  # no word from the node yet (e.g. just after a manager restart)

_RANK = {SERVING: 0, SYNCING: 1, WAITING: 2, LASTSRV: 3, OFFLINE: 4}


@dataclass(frozen=True)
class TargetView:
    target_id: int
    public: int  # pb.TargetState
    local: int   # pb.LocalTargetState, or UNKNOWN


def next_chain(targets: Sequence[TargetView]) -> list[tuple[int, int]]:
    """The chain's next (target id, public state) list, in its next order."""
    new: dict[int, int] = {}
    dying: list[int] = []  # serving targets whose node is gone, in chain order
    for t in targets:
        new[t.target_id] = _independent(t, dying)
    if dying:
        someone_serves = any(state == SERVING for state in new.values())
        has_lastsrv = any(state == LASTSRV for state in new.values())
        for i, target_id in enumerate(dying):
            new[target_id] = LASTSRV if (i == 0 and not someone_serves and not has_lastsrv) else OFFLINE
    order = sorted((t.target_id for t in targets), key=lambda tid: _RANK.get(new[tid], 5))
    # Predecessor-dependent rows: a syncing/waiting target with local state online syncs only when
    # the target before it (in the new order) is serving.
    by_id = {t.target_id: t for t in targets}
    for i, target_id in enumerate(order):
        t = by_id[target_id]
        if t.local == ONLINE and t.public in (SYNCING, WAITING):
            pred_serving = i > 0 and new[order[i - 1]] == SERVING
            new[target_id] = SYNCING if pred_serving else WAITING
    order = sorted(order, key=lambda tid: _RANK.get(new[tid], 5))
    return [(tid, new[tid]) for tid in order]


def _independent(t: TargetView, dying: list[int]) -> int:
    """The rows that do not look at the predecessor; `dying` collects serving targets gone offline."""
    if t.local == UNKNOWN:
        return t.public
    if t.local == OFFLINE_LOCAL:
        if t.public == SERVING:
            dying.append(t.target_id)
            return OFFLINE  # decided by the caller: lastsrv or offline
        return LASTSRV if t.public == LASTSRV else OFFLINE
    if t.local == UPTODATE:
        return {SERVING: SERVING, SYNCING: SERVING, WAITING: WAITING,
                LASTSRV: SERVING, OFFLINE: WAITING}.get(t.public, t.public)
    # ONLINE
    if t.public in (SERVING, LASTSRV):
        return SERVING
    if t.public == OFFLINE:
        return WAITING
    return t.public  # syncing/waiting: decided by the predecessor pass
