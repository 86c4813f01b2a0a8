"""The cluster manager: storage nodes, their targets, the chains built from them, the routing table.

Why an in-memory mirror of the store: heartbeats and routing reads are frequent and must not hit
RocksDB; every change is still written (one synced batch) before memory is updated, and memory is
reloaded from the store if a write fails. Liveness (last heartbeat) and the targets' local states
are memory only: they are rebuilt within one heartbeat interval after a restart.

Chains are formed greedily when nodes register or heartbeat (see `_form_chains`). Failure detection:
`check_chains()` (called by the metaserver's monitor thread every fraction of the heartbeat timeout)
feeds every chain through 3FS's state table (`chain_states.next_chain`), with OFFLINE as the local
state of targets whose node has been silent for longer than the timeout, and writes back what
changed through `update_chain` (chain and routing versions bumped in the same batch). Nodes and
clients pull the new table: nodes with every heartbeat reply, clients when a call says it moved.
After a manager restart, nodes not heard from yet are left alone for one timeout (grace).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator, Mapping, Sequence

from chainfs.common import config
from chainfs.common.errors import ChainfsError, Reason
from chainfs.metaserver.chain_states import OFFLINE_LOCAL, UNKNOWN, TargetView, next_chain
from chainfs.metaserver.store import (
    C_CHAIN, C_NODE, C_ROUTING, C_TARGET, P_CHAIN, P_NODE, P_TARGET,
    Store, Txn, TxnConflict, chain_key, node_key, target_key,
)
from chainfs.proto import meta_pb2 as pb

log = logging.getLogger(__name__)


class ClusterManager:
    def __init__(
        self,
        store: Store,
        replication: int = config.DEFAULT_REPLICATION,
        heartbeat_timeout: float = config.HEARTBEAT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        min_nodes: int = 0,
    ) -> None:
        if replication < 1:
            raise ValueError("replication must be >= 1")
        self.store = store
        self.replication = replication
        # Chains form only once this many nodes are alive, so that a cluster booting node by node
        # spreads its chains over all of them instead of filling the first R to arrive.
        self.min_nodes = max(min_nodes, replication)
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self.wall_ns = wall_ns
        self._lock = threading.RLock()
        self._last_seen: dict[int, float] = {}      # node id -> clock() of its last heartbeat
        self._last_seen_ns: dict[int, int] = {}     # node id -> wall time of the same
        self._local_states: dict[int, int] = {}     # target id -> LocalTargetState
        self._space: dict[int, tuple[int, int, int]] = {}  # target id -> (capacity, free, device)
        self._started = clock()
        self.active = True  # False on a standby metaserver (see activate / deactivate)
        self._load()

    def _load(self) -> None:
        snap = self.store.txn()  # one snapshot (one revision on etcd), read-only
        self.nodes: dict[int, pb.NodeInfo] = {}
        self.targets: dict[int, pb.TargetInfo] = {}
        self.chains: dict[int, pb.ChainInfo] = {}  # targets hold only target ids, in chain order
        for raw in snap.values(P_NODE):
            node = pb.NodeInfo.FromString(raw)
            self.nodes[node.node_id] = node
        for raw in snap.values(P_TARGET):
            target = pb.TargetInfo.FromString(raw)
            self.targets[target.target_id] = target
        for raw in snap.values(P_CHAIN):
            chain = pb.ChainInfo.FromString(raw)
            self.chains[chain.chain_id] = chain
        self.routing_version = snap.counter(C_ROUTING, 1)

    # ---- the manager's role (several metaservers: only the elected one is active) ----

    def activate(self) -> None:
        """Takes over as the manager: fresh tables from the store, liveness relearned (with grace)."""
        with self._lock:
            self._load()
            self._last_seen.clear()
            self._last_seen_ns.clear()
            self._local_states.clear()
            self._started = self.clock()
            self.active = True
        log.info("cluster manager active at routing v%d (%d chains)", self.routing_version, len(self.chains))

    def start_grace(self) -> None:
        """Starts the grace period now (when the server starts serving): nodes not heard from are
        declared dead only one heartbeat timeout after they could first reach this manager."""
        with self._lock:
            self._started = self.clock()

    def deactivate(self) -> None:
        with self._lock:
            self.active = False

    def require_active(self) -> None:
        if not self.active:
            raise ChainfsError(Reason.UNAVAILABLE, "this metaserver is not the cluster manager now; try another")

    def follow(self) -> None:
        """A standby's view of the chains (new files need them): reloaded when the routing moved."""
        if self.active:
            return
        if self.store.counter(C_ROUTING, 1) != self.routing_version:
            with self._lock:
                self._load()

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[Txn]:
        """One synced batch; on any failure memory is reloaded from what the store really holds.
        On etcd the batch is fenced: it applies only while this metaserver holds the manager's lease."""
        txn = self.store.txn()
        try:
            yield txn
            self.store.commit(txn, fenced=True)
        except TxnConflict:
            self._load()
            raise ChainfsError(Reason.UNAVAILABLE, "lost the cluster manager role while writing") from None
        except BaseException:
            self._load()
            raise

    def _bump_routing(self, txn: Txn) -> None:
        self.routing_version += 1
        txn.set_counter(C_ROUTING, self.routing_version)

    def _bump_chain(self, txn: Txn, chain: pb.ChainInfo) -> None:
        """A chain changed: its version and the routing version move in the same batch."""
        chain.version += 1
        txn.put(chain_key(chain.chain_id), chain.SerializeToString())
        self._bump_routing(txn)

    def _put_target(self, txn: Txn, target: pb.TargetInfo) -> None:
        txn.put(target_key(target.target_id), target.SerializeToString())

    def _alive(self, node_id: int) -> bool:
        seen = self._last_seen.get(node_id)
        return seen is not None and self.clock() - seen <= self.heartbeat_timeout

    def _seen(self, node_id: int) -> None:
        self._last_seen[node_id] = self.clock()
        self._last_seen_ns[node_id] = self.wall_ns()

    # ---- storage nodes ----

    def register(
        self, node_id: int, address: str, targets: Sequence[tuple[int, str]],
        endpoint: pb.NodeInfo | None = None, owner: str = "",
    ) -> tuple[int, list[int], pb.RoutingTable]:
        """Adds or refreshes a node and its targets (id 0 = new); returns ids and the routing table.

        A returning node keeps its node and target ids; an id this manager never handed out (its
        store was wiped) is accepted and the counters skip past it. `owner` (the caller's node token
        name, "" without auth) binds the node: a node owned by another name is refused.
        """
        if not address:
            raise ChainfsError(Reason.INVALID_ARGUMENT, "register: address is required")
        wanted = [tid for tid, _ in targets if tid]
        if len(wanted) != len(set(wanted)):
            raise ChainfsError(Reason.INVALID_ARGUMENT, f"register: duplicate target ids {wanted}")
        with self._lock, self._mutate() as txn:
            changed = False
            node = self.nodes.get(node_id) if node_id else None
            if node is not None:
                _check_owner(node, owner)
            if node is None:
                node_id = txn.claim(C_NODE, node_id)
                node = pb.NodeInfo(node_id=node_id, address=address, owner=owner)
                changed = True
            elif owner and not node.owner:
                node.owner = owner  # registered before auth was on: the first node token claims it
                changed = True
            elif node.address != address:
                log.info("node %d moved: %s -> %s", node_id, node.address, address)
                node.address = address
                changed = True
            if endpoint is not None and (node.data_address, node.host_id, node.local_socket,
                                         node.metrics_address) != (
                    endpoint.data_address, endpoint.host_id, endpoint.local_socket, endpoint.metrics_address):
                node.data_address = endpoint.data_address
                node.host_id = endpoint.host_id
                node.local_socket = endpoint.local_socket
                node.metrics_address = endpoint.metrics_address
                changed = True
            if changed:
                self.nodes[node_id] = node
                txn.put(node_key(node_id), _stored_node(node))
            ids: list[int] = []
            for target_id, path in targets:
                target = self.targets.get(target_id) if target_id else None
                if target is not None and target.node_id != node_id:
                    raise ChainfsError(
                        Reason.INVALID_ARGUMENT,
                        f"register: target {target_id} belongs to node {target.node_id}, not {node_id}",
                    )
                if target is None:
                    target_id = txn.claim(C_TARGET, target_id)
                    target = pb.TargetInfo(target_id=target_id, node_id=node_id, path=path)
                    self.targets[target_id] = target
                    self._put_target(txn, target)
                    changed = True
                elif target.path != path:
                    target.path = path
                    self._put_target(txn, target)
                    changed = True
                ids.append(target_id)
            self._seen(node_id)
            new_chains = self._form_chains(txn)
            if changed or new_chains:
                self._bump_routing(txn)
            log.info(
                "node %d registered at %s with targets %s; new chains %s; routing v%d",
                node_id, address, ids, new_chains, self.routing_version,
            )
        return node_id, ids, self.routing_table()

    def _form_chains(self, txn: Txn) -> list[int]:
        """Greedy: while >= R live nodes have unchained targets, chain one target from each of the
        R nodes with the most free targets (ties: lowest node id). The order is rotated by chain id
        so heads spread over nodes. A new chain holds no data, so all its targets start SERVING.
        """
        r = self.replication
        if sum(1 for node_id in self.nodes if self._alive(node_id)) < self.min_nodes:
            return []
        free: dict[int, list[int]] = {}
        for target in sorted(self.targets.values(), key=lambda t: t.target_id):
            if target.chain_id == 0 and self._alive(target.node_id):
                free.setdefault(target.node_id, []).append(target.target_id)
        created: list[int] = []
        while sum(1 for ids in free.values() if ids) >= r:
            picked_nodes = sorted((n for n, ids in free.items() if ids), key=lambda n: (-len(free[n]), n))[:r]
            chain_id = txn.allocate(C_CHAIN)
            picked = [free[n].pop(0) for n in picked_nodes]
            shift = (chain_id - 1) % r
            order = picked[shift:] + picked[:shift]
            chain = pb.ChainInfo(chain_id=chain_id, version=1, targets=[pb.TargetInfo(target_id=t) for t in order])
            for target_id in order:
                target = self.targets[target_id]
                target.chain_id = chain_id
                target.state = pb.SERVING
                self._put_target(txn, target)
            self.chains[chain_id] = chain
            txn.put(chain_key(chain_id), chain.SerializeToString())
            created.append(chain_id)
        return created

    def heartbeat(
        self, node_id: int, address: str, targets: Sequence[pb.TargetInfo], routing_version: int,
        owner: str = "",
    ) -> pb.HeartbeatReply:
        """Marks a node alive, records its targets' local states, and hands back a newer routing."""
        with self._lock:
            node = self.nodes.get(node_id)
            if node is None:
                raise ChainfsError(Reason.NOT_FOUND, f"unknown storage node {node_id}: register first")
            _check_owner(node, owner)
            if address and address != node.address:
                with self._mutate() as txn:
                    log.info("node %d moved: %s -> %s", node_id, node.address, address)
                    node.address = address
                    txn.put(node_key(node_id), _stored_node(node))
                    self._bump_routing(txn)
            self._seen(node_id)
            if any(t.chain_id == 0 for t in self.targets.values()):
                # Chains wait for live nodes: after a restart, or after a node came back, the
                # heartbeat that makes R nodes with free targets alive again forms them.
                with self._mutate() as txn:
                    if self._form_chains(txn):
                        self._bump_routing(txn)
            for info in targets:
                known = self.targets.get(info.target_id)
                if known is not None and known.node_id == node_id:
                    self._local_states[info.target_id] = info.local_state
                    if info.capacity_bytes:
                        self._space[info.target_id] = (info.capacity_bytes, info.free_bytes, info.device)
            reply = pb.HeartbeatReply(
                routing_changed=routing_version != self.routing_version,
                heartbeat_timeout_ms=int(self.heartbeat_timeout * 1000),
            )
            if reply.routing_changed:
                reply.routing.CopyFrom(self.routing_table())
            return reply

    def space(self) -> pb.SpaceReply:
        """Raw capacity and free bytes from the last heartbeats, each disk counted once.

        Targets that share a disk (same node host, same device) report the same file system, so
        a disk is keyed by (host, device); a statfs on a mount divides by the replication.
        """
        with self._lock:
            disks: dict[tuple[str, int], tuple[int, int]] = {}
            for target_id, (capacity, free, device) in self._space.items():
                target = self.targets.get(target_id)
                node = self.nodes.get(target.node_id) if target is not None else None
                if node is None:
                    continue
                host = node.address.rpartition(":")[0]
                disks[(host, device)] = (capacity, free)
            return pb.SpaceReply(capacity_bytes=sum(c for c, _ in disks.values()),
                                 free_bytes=sum(f for _, f in disks.values()),
                                 replication=self.replication, disks=len(disks))

    # ---- routing ----

    def get_routing(self, known_version: int = 0) -> tuple[bool, pb.RoutingTable | None]:
        with self._lock:
            if known_version == self.routing_version:
                return False, None
            return True, self.routing_table()

    def routing_table(self) -> pb.RoutingTable:
        with self._lock:
            table = pb.RoutingTable(version=self.routing_version, replication=self.replication)
            for node_id in sorted(self.nodes):
                table.nodes.append(self.node_info(node_id))
            for chain_id in sorted(self.chains):
                table.chains.append(self.chain_info(chain_id))
            return table

    def node_info(self, node_id: int) -> pb.NodeInfo:
        with self._lock:
            node = pb.NodeInfo()
            node.CopyFrom(self.nodes[node_id])
            node.alive = self._alive(node_id)
            node.last_heartbeat_ns = self._last_seen_ns.get(node_id, 0)
            return node

    def chain_info(self, chain_id: int) -> pb.ChainInfo:
        """A chain with full TargetInfo (state, node, path, local state), head first."""
        with self._lock:
            stored = self.chains[chain_id]
            chain = pb.ChainInfo(chain_id=chain_id, version=stored.version)
            for ref in stored.targets:
                target = chain.targets.add()
                target.CopyFrom(self.targets[ref.target_id])
                target.local_state = self._local_states.get(ref.target_id, pb.LOCAL_STATE_UNSPECIFIED)  # type: ignore[assignment]
            return chain

    def chain_lengths(self) -> list[tuple[int, int]]:
        """(chain id, number of targets), sorted: what the namespace picks new files' stripes from."""
        with self._lock:
            return [(cid, len(self.chains[cid].targets)) for cid in sorted(self.chains)]

    # ---- failure detection and state transitions ----

    def _local_state(self, target: pb.TargetInfo) -> int:
        """What the table sees as the target's local state: OFFLINE once its node is silent past T."""
        seen = self._last_seen.get(target.node_id)
        if seen is None:
            in_grace = self.clock() - self._started <= self.heartbeat_timeout
            return UNKNOWN if in_grace else OFFLINE_LOCAL
        if not self._alive(target.node_id):
            return OFFLINE_LOCAL
        return self._local_states.get(target.target_id, UNKNOWN)

    def check_chains(self) -> list[int]:
        """Applies the state table to every chain; returns the ids of the chains that changed."""
        changed: list[int] = []
        with self._lock:
            for chain_id in sorted(self.chains):
                stored = self.chains[chain_id]
                views = [TargetView(t.target_id, self.targets[t.target_id].state,
                                    self._local_state(self.targets[t.target_id])) for t in stored.targets]
                nxt = next_chain(views)
                old = [(v.target_id, v.public) for v in views]
                if nxt == old:
                    continue
                states = {tid: state for tid, state in nxt if state != self.targets[tid].state}
                log.info("chain %d: %s -> %s", chain_id, _show(old), _show(nxt))
                self.update_chain(chain_id, order=[tid for tid, _ in nxt], states=states)
                changed.append(chain_id)
        return changed

    # ---- chain changes ----

    def update_chain(
        self,
        chain_id: int,
        order: Sequence[int] | None = None,
        states: Mapping[int, int] | None = None,
    ) -> pb.ChainInfo:
        """Reorders a chain and/or sets its targets' states in one batch; chain and routing
        versions are bumped together. `order` must be a permutation of the chain's target ids."""
        with self._lock:
            stored = self.chains.get(chain_id)
            if stored is None:
                raise ChainfsError(Reason.NOT_FOUND, f"unknown chain {chain_id}")
            current = [t.target_id for t in stored.targets]
            if order is not None and sorted(order) != sorted(current):
                raise ChainfsError(
                    Reason.INVALID_ARGUMENT, f"chain {chain_id}: order {list(order)} is not a permutation of {current}"
                )
            for target_id in states or {}:
                if target_id not in current:
                    raise ChainfsError(Reason.INVALID_ARGUMENT, f"target {target_id} is not in chain {chain_id}")
            with self._mutate() as txn:
                if order is not None:
                    del stored.targets[:]
                    stored.targets.extend(pb.TargetInfo(target_id=t) for t in order)
                for target_id, state in (states or {}).items():
                    target = self.targets[target_id]
                    target.state = state  # type: ignore[assignment]
                    self._put_target(txn, target)
                self._bump_chain(txn, stored)
            log.info("chain %d now v%d: %s", chain_id, stored.version, [t.target_id for t in stored.targets])
            return self.chain_info(chain_id)


def _show(chain: list[tuple[int, int]]) -> str:
    return "[" + ", ".join(f"{tid}:{pb.TargetState.Name(state).lower()}" for tid, state in chain) + "]"


def _stored_node(node: pb.NodeInfo) -> bytes:
    """What the table keeps of a node: its identity and endpoints, not its liveness."""
    return pb.NodeInfo(node_id=node.node_id, address=node.address, data_address=node.data_address,
                       host_id=node.host_id, local_socket=node.local_socket,
                       metrics_address=node.metrics_address, owner=node.owner).SerializeToString()


def _check_owner(node: pb.NodeInfo, owner: str) -> None:
    """A node speaks only for itself: `owner` must be the name the node registered with."""
    if owner and node.owner and owner != node.owner:
        raise ChainfsError(Reason.PERMISSION_DENIED,
                           f"node {node.node_id} belongs to {node.owner}; {owner} cannot speak for it")
