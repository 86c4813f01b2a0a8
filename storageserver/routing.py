"""The storage node's view of the cluster: registration, heartbeats and chain lookups.

Replication needs only the small `RoutingView` interface (`position`, `refresh`), so tests can hand
it a fake. `ClusterRouting` is the real one: it registers with the cluster manager (keeping its node
and target ids in `<data dir>/node.json` so a restart comes back as the same node), heartbeats every
`config.HEARTBEAT_INTERVAL`, installs newer routing tables, and fences itself (treats its targets as
offline: no reads, no writes) when the manager has been unreachable for half the heartbeat timeout
(docs/architecture.md, "Self-fencing").

The fence is a lease: it runs from the moment the last successful heartbeat was SENT, never from
when its reply arrived (a reply that sat in a socket while the process was SIGSTOPped must not
renew it), and only heartbeats renew it (the manager's liveness clock runs on heartbeats; a routing
pull it does not see must not extend our right to serve). The manager declares a node dead only
after T without a heartbeat, so a node always stops serving at least T/2 before its chain moves on.

A restarted node (its targets still SERVING/SYNCING/WAITING in the table) sends no heartbeats until
the manager has marked them offline, as 3FS does: every returning target goes through resync.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import grpc

from chainfs.common.background import LoopThread
from chainfs.common import config
from chainfs.common.chains import head_target
from chainfs.common.files import write_atomically
from chainfs.common.errors import ChainfsError, Reason, is_retryable, reason_of
from chainfs.common.retry import Backoff, call_with_retry
from chainfs.common.rpc import ChannelPool
from chainfs.proto import meta_pb2, meta_pb2_grpc

log = logging.getLogger(__name__)

SERVING = meta_pb2.SERVING
SYNCING = meta_pb2.SYNCING
OFFLINE = meta_pb2.OFFLINE
_ACTIVE = (SERVING, SYNCING)
IDENTITY_FILE = "node.json"


@dataclass(frozen=True)
class ChainPosition:
    """Where this node's target stands in one chain, as of one routing table."""

    chain_id: int
    chain_version: int
    target_id: int             # this node's target in the chain
    state: int                 # its public state (meta_pb2.TargetState); OFFLINE when fenced
    predecessor: int           # target id, 0 when none
    successor: int             # target id, 0 when none
    successor_address: str     # host:port of the successor's node, "" when none
    is_head: bool
    is_tail: bool
    successor_state: int = 0   # the successor's public state, 0 when none
    successor_data_address: str = ""  # host:port of the successor's data service, "" = gRPC only


class RoutingView(Protocol):
    """What replication asks of the cluster view."""

    def position(self, chain_id: int) -> ChainPosition | None:
        """This node's place in the chain, or None when it holds no target of it."""

    def refresh(self) -> None:
        """Pulls the routing table now (rate-limited); returns once it is as fresh as it gets."""


def compute_position(routing: meta_pb2.RoutingTable, chain_id: int, local_targets: set[int],
                     fenced: bool = False) -> ChainPosition | None:
    """The position of the first local target in `chain_id`.

    Successor/predecessor: the next/previous target in chain order that is SERVING or SYNCING.
    Head: the first SERVING target. Tail: an active target with no active successor.
    """
    chain = next((c for c in routing.chains if c.chain_id == chain_id), None)
    if chain is None:
        return None
    targets = list(chain.targets)
    at = next((i for i, t in enumerate(targets) if t.target_id in local_targets), None)
    if at is None:
        return None
    me = targets[at]
    state = OFFLINE if fenced else me.state
    active = state in _ACTIVE
    pred = next((t for t in reversed(targets[:at]) if t.state in _ACTIVE), None)
    succ = next((t for t in targets[at + 1:] if t.state in _ACTIVE), None)
    head = head_target(targets)
    address = data_address = ""
    if succ is not None:
        node = next((n for n in routing.nodes if n.node_id == succ.node_id), None)
        if node is not None:
            address, data_address = node.address, node.data_address
    return ChainPosition(
        chain_id=chain_id,
        chain_version=chain.version,
        target_id=me.target_id,
        state=state,
        predecessor=pred.target_id if pred is not None else 0,
        successor=succ.target_id if succ is not None else 0,
        successor_address=address,
        is_head=active and state == SERVING and head is not None and head.target_id == me.target_id,
        is_tail=active and succ is None,
        successor_state=succ.state if succ is not None else 0,
        successor_data_address=data_address,
    )


def _space_of(path: str) -> dict[str, int]:
    """The capacity and free bytes of the file system holding `path` (for the cluster's statfs)."""
    try:
        vfs, st = os.statvfs(path), os.stat(path)
    except OSError:
        return {}
    return {"capacity_bytes": vfs.f_blocks * vfs.f_frsize, "free_bytes": vfs.f_bavail * vfs.f_frsize,
            "device": st.st_dev}
def fresh_position(routing: RoutingView, chain_id: int, chain_version: int = 0) -> ChainPosition | None:
    """This node's position in a chain, pulling the routing table once when the chain is unknown
    here or older than `chain_version` (a request from a peer that saw a newer table)."""
    pos = routing.position(chain_id)
    if pos is None or pos.chain_version < chain_version:
        routing.refresh()
        pos = routing.position(chain_id)
    return pos


class ClusterRouting:
    """Registration, heartbeats and the routing table of one storage node."""

    def __init__(self, meta_address: str, data_dir: str | os.PathLike[str], address: str,
                 target_paths: Sequence[str], channels: ChannelPool | None = None, *,
                 heartbeat_interval: float = config.HEARTBEAT_INTERVAL,
                 refresh_interval: float = 0.05, self_fence: bool = True) -> None:
        # Several metaservers ("h1:p1,h2:p2"): calls go to one and move on when it is unreachable or
        # a standby (only the elected one runs the cluster manager).
        self.meta_address = meta_address
        self.meta_addresses = [a.strip() for a in meta_address.split(",") if a.strip()]
        if not self.meta_addresses:
            raise ValueError(f"no metaserver address in {meta_address!r}")
        self._meta_index = 0
        self.data_dir = Path(data_dir)
        self.address = address
        self.target_paths = [str(Path(p).resolve()) for p in target_paths]
        self.channels = channels or ChannelPool()
        self.heartbeat_interval = heartbeat_interval
        self.refresh_interval = refresh_interval
        self.self_fence = self_fence
        self.metrics_address = ""  # host:port of this node's /metrics, registered with the manager
        # The lean data service's endpoint, published at registration (set before register()).
        self.endpoint = meta_pb2.NodeInfo()
        self.node_id = 0
        self.target_ids: list[int] = []
        self.restarted = False  # set when an identity was saved by an earlier run
        self._routing = meta_pb2.RoutingTable()
        self._install_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._last_refresh = 0.0
        self._last_contact = 0.0  # monotonic time of the last answer from the manager
        self._heartbeat_timeout = config.HEARTBEAT_TIMEOUT
        self._background = LoopThread("heartbeat", self._heartbeat_loop)
        self._stop = self._background.stopping
        self._listeners: list[Callable[[list[int]], None]] = []
        # Reports each target's local state in heartbeats (resync decides); default: up to date.
        self.local_state: Callable[[int], int] = lambda target_id: meta_pb2.UPTODATE
        self._load_identity()

    # ---- identity ----

    def _identity_path(self) -> Path:
        return self.data_dir / IDENTITY_FILE

    def _load_identity(self) -> None:
        path = self._identity_path()
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return
        self.node_id = int(saved.get("node_id", 0))
        self.restarted = self.node_id != 0
        by_path = {str(k): int(v) for k, v in saved.get("targets", {}).items()}
        self.target_ids = [by_path.get(p, 0) for p in self.target_paths]
        log.info("loaded identity: node %d, targets %s", self.node_id, self.target_ids)

    def _save_identity(self) -> None:
        write_atomically(self._identity_path(), json.dumps({
            "node_id": self.node_id,
            "targets": dict(zip(self.target_paths, self.target_ids)),
        }, indent=1, sort_keys=True), sync_dir=True)

    # ---- registration ----

    def on_registered(self, callback: Callable[[list[int]], None]) -> None:
        """Calls `callback(target_ids)` after every successful (re-)registration."""
        self._listeners.append(callback)

    @property
    def current_meta(self) -> str:
        return self.meta_addresses[self._meta_index % len(self.meta_addresses)]

    def _stub(self) -> meta_pb2_grpc.ClusterManagerStub:
        return meta_pb2_grpc.ClusterManagerStub(self.channels.get(self.current_meta))

    def _meta_failed(self, reason: Reason) -> bool:
        """Moves to the next metaserver after one that cannot serve us; True if it moved."""
        if len(self.meta_addresses) > 1 and reason in (Reason.UNAVAILABLE, Reason.TIMEOUT):
            self._meta_index = (self._meta_index + 1) % len(self.meta_addresses)
            return True
        return False

    def register(self, stop: threading.Event | None = None, timeout: float | None = None) -> None:
        """Registers (or re-registers with the saved ids), retrying until the manager answers
        (or `timeout` passes, or `stop` is set)."""
        failures = 0

        def attempt() -> meta_pb2.RegisterReply:
            while True:
                known = len(self.target_ids) == len(self.target_paths)
                ids = self.target_ids if known else [0] * len(self.target_paths)
                request = meta_pb2.RegisterRequest(
                    node_id=self.node_id,
                    address=self.address,
                    targets=[meta_pb2.RegisterTarget(target_id=t, path=p) for t, p in zip(ids, self.target_paths)],
                    metrics_address=self.metrics_address,
                    data_address=self.endpoint.data_address,
                    host_id=self.endpoint.host_id,
                    local_socket=self.endpoint.local_socket,
                )
                try:
                    # Several metaservers: one that stopped answering must not hold us for the full timeout.
                    rpc_timeout = max(2.0, config.META_RPC_TIMEOUT / len(self.meta_addresses))
                    return self._stub().Register(request, timeout=rpc_timeout)
                except grpc.RpcError as err:
                    if reason_of(err) != Reason.NOT_FOUND or not self.node_id:
                        raise
                    log.warning("manager does not know node %d; registering as a new node", self.node_id)
                    self.node_id, self.target_ids = 0, []

        def on_retry(reason: Reason) -> None:
            nonlocal failures
            failures += 1
            self._meta_failed(reason)
            if failures == 1 or failures % 20 == 0:
                log.info("waiting for the cluster manager at %s (%s)", self.meta_address, reason.value)

        try:
            reply = call_with_retry(attempt, timeout, on_retry, "registration",
                                    retryable=lambda r: is_retryable(r) or r == Reason.INTERNAL,
                                    backoff=Backoff(timeout, first=0.1, cap=1.0, stop=stop))
        except grpc.RpcError as err:
            reason = reason_of(err)
            if not is_retryable(reason) and reason != Reason.INTERNAL:
                raise ChainfsError(reason, f"registration refused: {err.details()}") from err
            if stop is not None and stop.is_set():
                raise ChainfsError(Reason.UNAVAILABLE, "stopped while registering") from err
            raise ChainfsError(Reason.UNAVAILABLE, f"cluster manager at {self.meta_address} did not answer") from err
        if len(reply.target_ids) != len(self.target_paths):
            raise ChainfsError(Reason.INTERNAL, f"manager returned {len(reply.target_ids)} target ids "
                                                f"for {len(self.target_paths)} targets")
        if self.node_id and reply.node_id != self.node_id:
            log.warning("manager renamed node %d to %d", self.node_id, reply.node_id)
        self.node_id = reply.node_id
        self.target_ids = list(reply.target_ids)
        self._save_identity()
        if reply.HasField("routing"):
            self._install(reply.routing)
        log.info("registered as node %d at %s with targets %s", self.node_id, self.address, self.target_ids)
        for callback in self._listeners:
            callback(list(self.target_ids))

    # ---- heartbeats ----

    def must_wait_before_heartbeats(self) -> bool:
        """True while we restarted and a target of ours is still SERVING/SYNCING/WAITING in the table.

        A brand-new node (no saved identity) holds no data, so its targets may serve at once.
        """
        if not self.restarted:
            return False
        mine = set(self.target_ids)
        return any(t.target_id in mine and t.state in (SERVING, SYNCING, meta_pb2.WAITING)
                   for c in self._routing.chains for t in c.targets)

    def wait_until_offline(self, stop: threading.Event | None = None, poll: float = 0.1) -> None:
        """Pulls routing until the manager has marked our chained targets offline (or lastsrv)."""
        logged = False
        while self.must_wait_before_heartbeats():
            if not logged:
                log.info("restarted: waiting for the manager to mark our targets offline before heartbeating")
                logged = True
            if stop is not None and stop.is_set():
                raise ChainfsError(Reason.UNAVAILABLE, "stopped while waiting to rejoin")
            self._last_refresh = 0.0
            self.refresh()
            (stop.wait(poll) if stop is not None else time.sleep(poll))

    def start_heartbeats(self) -> None:
        self._background.start()

    def stop(self) -> None:
        self._background.stop()

    def _heartbeat_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.heartbeat()
                if failures:
                    log.info("cluster manager reachable again after %d failed heartbeats", failures)
                failures = 0
            except grpc.RpcError as err:
                failures += 1
                reason = reason_of(err)
                if reason == Reason.NOT_FOUND:
                    log.warning("manager forgot node %d; re-registering", self.node_id)
                    try:
                        self.register(self._stop, timeout=self.heartbeat_interval * 4)
                    except ChainfsError as exc:
                        log.warning("re-registration failed: %s", exc.message)
                elif failures == 1 or failures % 20 == 0:
                    log.warning("heartbeat to %s failed (%s): %s", self.meta_address, reason.value, err.details())
            except Exception:  # noqa: BLE001 - the heartbeat thread must not die
                failures += 1
                log.exception("heartbeat failed")
            self._stop.wait(self.heartbeat_interval)

    def heartbeat(self) -> None:
        request = meta_pb2.HeartbeatRequest(
            node_id=self.node_id,
            address=self.address,
            targets=[
                meta_pb2.TargetInfo(target_id=t, node_id=self.node_id, path=p, local_state=self.local_state(t),
                                    **_space_of(p))
                for t, p in zip(self.target_ids, self.target_paths)
            ],
            routing_version=self._routing.version,
        )
        timeout = max(1.0, min(config.META_RPC_TIMEOUT, self._heartbeat_timeout / 2))
        if len(self.meta_addresses) > 1:  # leave room to try every metaserver within T/2
            timeout = max(0.25, timeout / len(self.meta_addresses))
        for attempt in range(len(self.meta_addresses)):
            sent = time.monotonic()
            try:
                reply = self._stub().Heartbeat(request, timeout=timeout)
                break
            except grpc.RpcError as err:
                if attempt == len(self.meta_addresses) - 1 or not self._meta_failed(reason_of(err)):
                    raise
        if reply.heartbeat_timeout_ms > 0:
            self._heartbeat_timeout = reply.heartbeat_timeout_ms / 1000.0
        if reply.HasField("routing"):
            self._install(reply.routing)
        # Only now, with the table the manager sent installed: the lease runs from `sent`.
        self._last_contact = max(self._last_contact, sent)

    # ---- routing table ----

    def _install(self, table: meta_pb2.RoutingTable) -> None:
        with self._install_lock:
            empty = not self._routing.chains and not self._routing.nodes
            if table.version > self._routing.version or empty:
                if table.version != self._routing.version:
                    log.info("routing version %d -> %d", self._routing.version, table.version)
                self._routing = table

    @property
    def routing(self) -> meta_pb2.RoutingTable:
        return self._routing

    def refresh(self) -> None:
        with self._refresh_lock:
            if time.monotonic() - self._last_refresh < self.refresh_interval:
                return
            try:
                reply = self._stub().GetRouting(
                    meta_pb2.RoutingRequest(known_version=self._routing.version), timeout=2.0
                )
            except grpc.RpcError as err:
                log.debug("routing refresh failed: %s", reason_of(err).value)
                self._meta_failed(err)
                return
            finally:
                self._last_refresh = time.monotonic()
            if reply.HasField("routing") and (reply.changed or reply.routing.version > self._routing.version):
                self._install(reply.routing)

    @property
    def fenced(self) -> bool:
        """True when no heartbeat sent in the last T/2 was answered (or none was, yet)."""
        if not self.self_fence:
            return False
        if not self._last_contact:
            return True
        return time.monotonic() - self._last_contact > self._heartbeat_timeout / 2

    def position(self, chain_id: int) -> ChainPosition | None:
        return compute_position(self._routing, chain_id, set(self.target_ids), self.fenced)
