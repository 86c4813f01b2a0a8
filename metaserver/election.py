"""Electing the one metaserver that runs the cluster manager and GC, with an etcd lease.

Why a lease and a fence: every metaserver serves the namespace, but chain reconfiguration must have
exactly one author. A candidate grants itself a lease and puts `<prefix>/leader` = its address with
that lease, only if the key does not exist (one etcd Txn). It keeps the lease alive every TTL/4.
If it dies or is cut off, etcd deletes the key when the lease lapses and another candidate wins.
Every write of the manager carries a compare "the leader key still holds MY lease" (the store's
fence), so a deposed leader that has not noticed yet cannot change a chain: its commits fail.
A leader also steps down on its own once no keep-alive has been answered for the TTL, counted
from when the last answered one was sent (the lease cannot have outlived that).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from chainfs.common.background import LoopThread
from chainfs.common.errors import ChainfsError
from chainfs.metaserver.etcd_client import mod_equals, put_op
from chainfs.metaserver.etcd_store import EtcdStore
from chainfs.proto import etcd_pb2 as epb

log = logging.getLogger(__name__)


class ManagerElection:
    """Campaigns while running; `on_elected` / `on_deposed` run on the election thread."""

    def __init__(self, store: EtcdStore, member: str, ttl_s: int, on_elected: Callable[[], None],
                 on_deposed: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.client = store.client
        self.key = store.root + b"leader"
        self.member = member
        self.ttl_s = max(1, int(ttl_s))
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.clock = clock
        self.leader = False
        self.lease_id = 0
        self._renewed_at = 0.0
        self._background = LoopThread("election", self._loop, join_timeout=10)
        self._stop = self._background.stopping
        store.require_fence()

    @property
    def interval(self) -> float:
        return self.ttl_s / 4

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        """Stops campaigning; a leader revokes its lease so that another takes over at once."""
        self._background.stop()
        if self.leader:
            self._step_down("stopping")
            self.client.revoke(self.lease_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.leader:
                    self._renew()
                else:
                    self._campaign()
            except ChainfsError as exc:
                log.debug("election: %s", exc.message)
            except Exception:  # noqa: BLE001 - the election thread must not die
                log.exception("election pass failed")
            if self.leader and self.clock() - self._renewed_at >= self.ttl_s:
                self._step_down("no keep-alive answered within the lease")
            self._stop.wait(self.interval)

    def _campaign(self) -> None:
        if self.client.get(self.key) is not None:
            return
        sent = self.clock()
        lease = self.client.grant(self.ttl_s)
        resp = self.client.txn([mod_equals(self.key, 0)], [put_op(self.key, self.member.encode(), lease)])
        if not resp.succeeded:
            self.client.revoke(lease)
            return
        self.lease_id, self._renewed_at = lease, sent
        self.store.fence_with(epb.Compare(result=epb.Compare.EQUAL, target=epb.Compare.LEASE, key=self.key,
                                          lease=lease))
        self.leader = True
        log.info("elected cluster manager (%s, lease %x, ttl %ds)", self.member, lease, self.ttl_s)
        self.on_elected()

    def _renew(self) -> None:
        sent = self.clock()
        ttl = self.client.keep_alive(self.lease_id, within=self.ttl_s * 0.75)
        if ttl <= 0:
            self._step_down("the lease expired")
            return
        self._renewed_at = sent

    def _step_down(self, why: str) -> None:
        if not self.leader:
            return
        self.leader = False
        self.store.fence_with(None)
        log.warning("no longer the cluster manager (%s): %s", self.member, why)
        self.on_deposed()
