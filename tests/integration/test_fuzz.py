"""A fuzz test over every RPC of every chainfs gRPC service, and the TCP data port, against a real
LocalCluster: random and mutated requests (tests/fuzzgen.py) sent with no token, forged tokens, a
path-prefix user token, a plain user token and, last, a node token.

What must hold, for every request:
- no server process dies, and every one still answers its health check;
- no call hangs: each has a deadline and none runs into it;
- no bad input is answered UNKNOWN or INTERNAL (a server that did not validate it);
- without a valid token every call is UNAUTHENTICATED, and the namespace and every node's chunks
  are exactly as before; a prefix token changes nothing outside its prefix;
- no file appears outside the cluster's directory (paths like `../../x` must not escape).

Seeded and bounded: CHAINFS_FUZZ_SEED (default 1717) picks the requests, CHAINFS_FUZZ_ROUNDS
(default 10) how many per method and credential; a failure names its case, and
`tests.fuzzgen.case_rng(seed, case)` rebuilds that request. Run longer locally with e.g.
`CHAINFS_FUZZ_ROUNDS=200 CHAINFS_FUZZ_SEED=$RANDOM pytest tests/integration/test_fuzz.py`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster, auth_files
from chainfs.cluster.limits import DataLimits
from chainfs.common import auth, rpc, wire
from chainfs.common.addresses import split_address
from chainfs.proto import meta_pb2 as mpb
from chainfs.proto import storage_pb2, storage_pb2_grpc

from tests.fuzzgen import Fuzzer, Pool, case_rng, harvest, message_class
from tests.private_home import private_config_home

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CHAINFS_FUZZ_SEED", "") or 1717)
ROUNDS = int(os.environ.get("CHAINFS_FUZZ_ROUNDS", "") or 10)
FRAMES = 8 * ROUNDS  # data-port connections per credential
CALL_TIMEOUT = 15.0  # every call's deadline: far above any honest answer, even on a loaded machine
MARKER = f"fzzesc{SEED}"
PREFIX = "/tenant"
# Bad input must never get these: UNKNOWN/INTERNAL mean a server did not validate it,
# DEADLINE_EXCEEDED that it hung, UNIMPLEMENTED that the method table is wrong.
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.UNIMPLEMENTED}
# Last, a node token (of a node that does not exist): it may reshape the cluster (register junk
# nodes, forward writes), so only crashes, bad statuses, hangs and escapes are checked after it.
MODES = ("none", "forged", "prefix", "user", "node")
TALLY: dict[tuple[str, str], int] = {}  # (credential, status) -> calls, printed at the end


class Env:
    """The cluster under test, its tokens, and the ids the generator should aim at."""

    def __init__(self, cluster: LocalCluster, top: Path) -> None:
        self.cluster = cluster
        self.top = top  # the test's temp root; the cluster lives three levels below it
        secret = auth_files.load_secret(cluster.root)
        self.secret = secret
        self.tokens = {"user": auth.issue(secret, "user", "fuzzer"),
                       "prefix": auth.issue(secret, "user", "tenant", prefix=PREFIX),
                       "node": auth.issue(secret, "node", "storage-fuzz")}
        self.admin = ChainClient(cluster.address, retry_deadline=30.0)
        self.table = cluster.routing()
        self.pool = Pool()

    def forged(self, rng) -> str:  # type: ignore[no-untyped-def]
        """A token this cluster must refuse, a different kind each time."""
        real = self.tokens["user"]
        head, body, mac = real.split(".")
        return rng.choice((
            "", "nonsense", "cfs1.e30.AAAA", f"{head}.{body}.{mac[:-2]}AA",
            f"{head}.{auth.issue(self.secret, 'node', 'x').split('.')[1]}.{mac}",   # a node payload, a user MAC
            auth.issue(os.urandom(32), "user", "root", root=True),               # another cluster's secret
            auth.issue(self.secret, "user", "old", root=True, ttl=-5),           # expired
            "cfs1." + "A" * 5000 + ".x",
        ))

    def metadata(self, mode: str, rng) -> tuple:  # type: ignore[no-untyped-def]
        if mode == "none":
            return rng.choice(((), (("authorization", "Basic Zm9vOmJhcg=="),), (("authorization", ""),)))
        token = self.forged(rng) if mode == "forged" else self.tokens[mode]
        return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    top = tmp_path_factory.mktemp("fuzz")
    (top / "outside").mkdir()
    (top / "outside" / "keep").write_text("not the cluster's")
    with private_config_home(top / "xdg"):
        # a short stall timeout: a fuzzed frame that announces more than it sends is dropped fast
        with LocalCluster(top / "a" / "b" / "cluster", storage_nodes=2, replicas=2, targets_per_node=1,
                          heartbeat_timeout=5.0, fsync=False, limits=DataLimits(stall_timeout=3.0)) as c:
            e = Env(c, top)
            seed_cluster(e)
            yield e


def seed_cluster(e: Env) -> None:
    """Files inside and outside the prefix, an open session; their ids go into the pool."""
    admin = e.admin
    small = mpb.Layout(chunk_size=65536, stripe_width=2)
    admin.mkdir("/seed", layout=small)
    admin.mkdir(PREFIX, layout=small)
    admin.write_file("/seed/a", os.urandom(200_000))
    admin.write_file(PREFIX + "/b", b"tenant bytes" * 1000)
    writer = admin.open_writer("/seed/open")  # left open: its session (id, capability) is a target too
    harvest(writer.session, e.pool)
    for path in ("/", "/seed", "/seed/a", PREFIX, PREFIX + "/b"):
        harvest(admin.stat(path), e.pool)
        e.pool.paths.append(path)
    harvest(e.table, e.pool)  # node, chain and target ids, versions, addresses
    e.pool.strings += [e.cluster.address, "fuzz-client:1", *e.tokens.values()]
    e.pool.blobs += [t.encode() for t in e.tokens.values()]
    for values in (e.pool.ints, e.pool.strings, e.pool.blobs):
        values[:] = sorted(set(values), key=repr)  # one of each, in an order the seed alone decides


class Method(NamedTuple):
    name: str          # /package.Service/Method
    request: type
    reply: type
    cstream: bool      # client streaming
    sstream: bool      # server streaming
    on_meta: bool      # served by the metaserver (else by every storage node)


def all_methods() -> list[Method]:
    """Every RPC of every chainfs service, from the generated descriptors."""
    out = []
    for module in (mpb, storage_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out.append(Method(f"/{service.full_name}/{m.name}", message_class(m.input_type),
                                  message_class(m.output_type), m.client_streaming, m.server_streaming,
                                  module is mpb))
    return out


# ---- snapshots ----

def namespace(e: Env) -> dict[str, bytes]:
    """Every path and its inode, listed as root (nothing here changes an inode)."""
    out: dict[str, bytes] = {}
    todo = ["/"]
    while todo:
        path = todo.pop()
        for entry in e.admin.ls(path):
            child = path.rstrip("/") + "/" + entry.name
            out[child] = entry.inode.SerializeToString(deterministic=True)
            if entry.inode.type == mpb.DIRECTORY:
                todo.append(child)
    return out


def chunks(e: Env) -> dict[tuple, bytes]:
    """Every chunk of every chain's target on every node, with its committed version and CRC."""
    out: dict[tuple, bytes] = {}
    for node in e.table.nodes:
        stub = storage_pb2_grpc.StorageStub(rpc.ChannelPool().get(node.address, e.cluster.root_token))
        for chain in e.table.chains:
            if not any(t.node_id == node.node_id for t in chain.targets):
                continue
            request = storage_pb2.ChunkListRequest(chain_id=chain.chain_id, limit=1000)
            while True:
                reply = stub.ListChunks(request, timeout=CALL_TIMEOUT)
                for meta in reply.chunks:
                    key = (node.node_id, chain.chain_id, meta.chunk.inode, meta.chunk.index)
                    out[key] = meta.SerializeToString(deterministic=True)
                if not reply.more or not reply.chunks:
                    break
                request.start_after.CopyFrom(reply.chunks[-1].chunk)
    return out


def files_outside(e: Env) -> set[str]:
    """Paths under the test's temp root that are not the cluster's (or the private home's)."""
    skip = (e.cluster.root, e.top / "xdg")
    out = set()
    for dirpath, dirnames, filenames in os.walk(e.top):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip and not any(p in skip for p in (here / d).parents)]
        out.update(str(here / n) for n in dirnames + filenames)
    return out


def escaped(e: Env) -> list[str]:
    """Files named after the marker anywhere the fuzzed paths could reach: the temp root's tree,
    the servers' working directory and its parents, and /tmp."""
    found = [os.path.join(d, n) for d, ds, fs in os.walk(e.top) for n in ds + fs if MARKER in n]
    places = [Path.cwd(), *Path.cwd().parents, Path("/tmp"), e.cluster.root.parent]
    for place in places:
        try:
            found += [str(place / n) for n in os.listdir(place) if MARKER in n]
        except OSError:
            pass
    return found


def servers_alive(e: Env) -> list[str]:
    """What is wrong with the cluster's processes: dead ones, or ones not answering health checks."""
    problems = []
    for name, running in e.cluster.running().items():
        if not running:
            problems.append(f"{name} is not running")
    for address, service in [(e.cluster.address, "")] + [(n.address, "chainfs.Storage") for n in e.table.nodes]:
        with grpc.insecure_channel(address) as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT).status
            except grpc.RpcError as err:
                problems.append(f"{address} health check failed: {err.code()}")
                continue
        if status != health_pb2.HealthCheckResponse.SERVING:
            problems.append(f"{address} is {status}, not SERVING")
    return problems


# ---- sending ----

def send(channel: grpc.Channel, m: Method, request, metadata: tuple
         ) -> tuple[grpc.StatusCode, str, bytes]:  # type: ignore[no-untyped-def]
    """One call with raw-bytes (de)serializers and a deadline: its status code, details, and the
    reply's bytes (b"" for a server stream)."""
    reply = b""
    try:
        if m.cstream:
            reply = channel.stream_unary(m.name)(iter(request), timeout=CALL_TIMEOUT, metadata=metadata)
        elif m.sstream:
            for _ in channel.unary_stream(m.name)(request, timeout=CALL_TIMEOUT, metadata=metadata):
                pass
        else:
            reply = channel.unary_unary(m.name)(request, timeout=CALL_TIMEOUT, metadata=metadata)
    except grpc.RpcError as err:
        return err.code(), err.details() or "", b""
    return grpc.StatusCode.OK, "", reply


def request_bytes(fz: Fuzzer, cls: type, cstream: bool):  # type: ignore[no-untyped-def]
    """A serialized random request (a list of messages for a client stream), mutated one time in four."""
    def one(c: type) -> bytes:
        raw = fz.message(c).SerializeToString()
        return fz.mutate(raw) if fz.rng.random() < 0.25 else raw
    if not cstream:
        return one(cls)
    return [one(cls) for _ in range(fz.rng.randint(0, 4))]


def fuzz_grpc(e: Env, mode: str, problems: list[str]) -> int:
    channels = {a: grpc.insecure_channel(a, options=[("grpc.max_send_message_length", 16 << 20)])
                for a in [e.cluster.address] + [n.address for n in e.table.nodes]}
    sent = 0
    try:
        for m in all_methods():
            for r in range(ROUNDS):
                case = f"{mode}:{m.name}:{r}"
                rng = case_rng(SEED, case)
                fz = Fuzzer(rng, e.pool, MARKER)
                address = e.cluster.address if m.on_meta else rng.choice(e.table.nodes).address
                started = time.monotonic()
                code, details, reply = send(channels[address], m, request_bytes(fz, m.request, m.cstream),
                                            e.metadata(mode, rng))
                sent += 1
                if reply and len(e.pool.ints) < 5000:
                    # what this call made (a session, an inode, a capability) is a target for later ones
                    harvest(m.reply.FromString(reply), e.pool)
                TALLY[(mode, code.name)] = TALLY.get((mode, code.name), 0) + 1
                took = time.monotonic() - started
                if code in FORBIDDEN:
                    problems.append(f"{case}: {code.name} after {took:.1f} s: {details[:200]}")
                elif mode in ("none", "forged") and code != grpc.StatusCode.UNAUTHENTICATED:
                    problems.append(f"{case}: {code.name} without a valid token")
    finally:
        for channel in channels.values():
            channel.close()
    return sent


def fuzz_data_port(e: Env, mode: str, problems: list[str]) -> None:
    """Random frames on the nodes' data ports, before and after OP_AUTH (and, without a token, on
    their short-circuit Unix sockets); every reply must be a well-formed frame whose error, if
    any, is not INTERNAL, and the node must answer in time."""
    for k in range(FRAMES):
        case = f"{mode}:data:{k}"
        rng = case_rng(SEED, case)
        fz = Fuzzer(rng, e.pool, MARKER)
        node = rng.choice(e.table.nodes)
        sent: list[str] = []  # each frame's prefix and how many bytes followed it
        if mode == "none" and node.local_socket and rng.random() < 0.3:
            # the short-circuit socket: no token (mode 0600), read-only opens of chunk files
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CALL_TIMEOUT)
            sock.connect(node.local_socket)
        else:
            sock = socket.create_connection(split_address(node.data_address), timeout=CALL_TIMEOUT)
        with sock:
            try:
                if mode in ("prefix", "user", "node") and rng.random() < 0.85:
                    wire.authenticate(sock, e.tokens[mode])
                elif mode == "forged":
                    wire.send_frame(sock, wire.OP_AUTH, e.forged(rng).encode())
                for _ in range(rng.randint(1, 3)):
                    frame = random_frame(fz)
                    sent.append(frame[:wire.PREFIX.size].hex() + f"+{len(frame) - wire.PREFIX.size}")
                    sock.sendall(frame)
                    if not read_replies(sock, case, problems):
                        break
            except (ConnectionError, BrokenPipeError):
                pass  # the node closed the connection: allowed for any bad frame
            except TimeoutError:
                problems.append(f"{case}: no answer within {CALL_TIMEOUT} s to frames {sent}")
            except Exception as exc:  # noqa: BLE001 - report every case, not only the first
                problems.append(f"{case}: {type(exc).__name__}: {exc}")


def random_frame(fz: Fuzzer) -> bytes:
    rng = fz.rng
    op = rng.choice((wire.OP_WRITE, wire.OP_WRITE, wire.OP_READ, wire.OP_READ, wire.OP_OPEN_LOCAL,
                     wire.OP_AUTH, wire.OP_OK, wire.OP_ERROR, wire.OP_ITEM, rng.randrange(256)))
    kind = rng.choice((storage_pb2.WriteHeader, storage_pb2.ReadRequest))
    header = fz.message(kind).SerializeToString()
    if rng.random() < 0.3:
        header = fz.mutate(header)
    payload = rng.randbytes(rng.choice((0, 0, 1, 100, 4096, 70000)))
    prefix = wire.pack_prefix(op, len(header), len(payload))
    r = rng.random()
    if r < 0.1:
        prefix = rng.randbytes(len(prefix))  # bad magic, random lengths
    elif r < 0.2:  # a prefix that announces more than follows (the node must not wait forever)
        prefix = wire.pack_prefix(op, len(header), len(payload) + rng.choice((1, 1 << 20, 64 << 20, 1 << 31)))
    return prefix + header + payload


def read_replies(sock: socket.socket, case: str, problems: list[str]) -> bool:
    """Reads the node's answer to one frame; False when the node closed the connection."""
    try:
        op, header_len, payload_len = wire.recv_prefix(sock)
        while True:
            header = wire.recv_header(sock, header_len)
            wire.recv_header(sock, payload_len)  # the payload, if any
            if op == wire.OP_ERROR:
                reason = wire.error_of(header).reason.value
                if reason == "internal":
                    problems.append(f"{case}: data port answered internal: {wire.error_of(header).message}")
                return True
            if op != wire.OP_ITEM:
                return True
            sock.settimeout(0.5)  # more items may follow a read's first
            try:
                op, header_len, payload_len = wire.recv_prefix(sock)
            except TimeoutError:
                return True
            finally:
                sock.settimeout(CALL_TIMEOUT)
    except wire.PeerClosed:
        return False


# ---- the test ----

def check_phase(e: Env, mode: str, problems: list[str], before: dict, outside_before: set[str],
                snapshot: Callable[[], dict]) -> None:
    problems += servers_alive(e)
    after = snapshot()
    if mode in ("none", "forged"):
        for what in ("namespace", "chunks"):
            if after[what] != before[what]:
                changed = set(after[what].items()) ^ set(before[what].items())
                problems.append(f"{mode}: {what} changed without a valid token: {sorted(changed)[:5]}")
    elif mode == "prefix":
        outside = {p: v for p, v in after["namespace"].items() if not p.startswith(PREFIX + "/") and p != PREFIX}
        was = {p: v for p, v in before["namespace"].items() if not p.startswith(PREFIX + "/") and p != PREFIX}
        if outside != was:
            problems.append(f"prefix token changed paths outside {PREFIX}: {sorted(set(outside) ^ set(was))[:5]}")
        # nor any chunk of a file outside it (chunk capabilities: nodes check the inode's rights)
        inodes = {mpb.Inode.FromString(v).id for v in was.values()}
        moved = {k for k in set(before["chunks"]) | set(after["chunks"]) if k[2] in inodes
                 and before["chunks"].get(k) != after["chunks"].get(k)}
        if moved:
            problems.append(f"prefix token changed chunks of files outside {PREFIX}: {sorted(moved)[:5]}")
    new = files_outside(e) - outside_before
    if new:
        problems.append(f"{mode}: files appeared outside the cluster dir: {sorted(new)[:5]}")
    if escaped(e):
        problems.append(f"{mode}: files named after the fuzzed paths: {escaped(e)[:5]}")


@pytest.mark.timeout(max(300, 20 * ROUNDS))  # a long local run (CHAINFS_FUZZ_ROUNDS) gets longer
def test_fuzz_every_rpc_and_the_data_port(env: Env) -> None:
    started = time.monotonic()
    outside_before = files_outside(env)
    assert str(env.top / "outside" / "keep") in outside_before
    methods = all_methods()
    assert len(methods) >= 25 and any(m.cstream for m in methods) and any(m.sstream for m in methods)

    def snapshot() -> dict:
        return {"namespace": namespace(env), "chunks": chunks(env)}

    report: list[str] = []
    sent = 0
    for mode in MODES:
        if mode == "node":  # the cluster still does its job after the clients' fuzzing
            payload = os.urandom(300_000)
            env.admin.write_file("/after-fuzz", payload)
            assert env.admin.read_file("/after-fuzz") == payload
        before = snapshot()
        problems: list[str] = []
        sent += fuzz_grpc(env, mode, problems)
        fuzz_data_port(env, mode, problems)
        check_phase(env, mode, problems, before, outside_before, snapshot)
        report += problems
    assert sent == len(MODES) * len(methods) * ROUNDS
    assert not report, f"seed {SEED}, {len(report)} problems:\n" + "\n".join(report[:40])
    print(f"fuzz: seed {SEED}, {sent} calls, {len(MODES) * FRAMES} data connections, "
          f"{time.monotonic() - started:.1f} s; statuses {sorted(TALLY.items())}")
