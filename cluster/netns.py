"""Hosts in network namespaces on one bridge, and network faults between them.

Why: a process kill is a clean failure; real clusters also lose links, drop packets one way, and
slow down. Each server of a netns cluster runs in its own network namespace (a "host") with its own
address on a private bridge; the test process itself is one more host, through the bridge's own
address. Faults are iptables DROP rules inside the namespaces (a partition: packets vanish, so
calls time out as they would across a cut cable) and, where the kernel has `sch_netem`, added
latency with `tc`. Traffic stays on the bridge: it has no uplink and nothing is routed off it.

Needs root (CAP_NET_ADMIN) and `ip`/`iptables` (iproute2, iptables; scripts/install_sysdeps.sh).
Every namespace, veth and the bridge are removed by `destroy()` (also on a failed `create()`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import shutil
import subprocess
import uuid
from typing import Iterable, Sequence

log = logging.getLogger(__name__)


def netns_supported() -> str | None:
    """None when namespaces can be made here, else why not (for skip reasons)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install_sysdeps.sh)"
    probe = f"cfsprobe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def host_command(tag: str, i: int) -> list[str]:
    """The command prefix that runs a program on host i of lab `tag`, as on a machine of its own:
    in its network namespace, and with its own host name (a UTS namespace), so that nothing takes
    two hosts for one (short-circuit reads compare host names). `unshare` and `sh` exec, so the
    pid that starts is the program's."""
    name = f"cfs-{tag}-{i}"
    return ["ip", "netns", "exec", name, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise OSError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _used_subnets() -> set[str]:
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    used = set()
    for line in out.splitlines():
        for word in line.split():
            if "/" in word and word[0].isdigit():
                used.add(str(ipaddress.ip_interface(word).network))
    return used


class NetnsLab:
    """`hosts` namespaces on a bridge; host i has address `ip(i)`, the test process `gateway`."""

    def __init__(self, hosts: int, tag: str | None = None) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError(f"hosts must be between 1 and 200, got {hosts}")
        self.tag = tag or uuid.uuid4().hex[:8]
        self.hosts = hosts
        self.bridge = f"cfb{self.tag}"[:15]
        self.names = [f"cfs-{self.tag}-{i}" for i in range(hosts)]
        self.subnet: ipaddress.IPv4Network | None = None
        self.delay_supported: bool | None = None
        self._created: list[str] = []  # namespaces made so far

    @classmethod
    def attach(cls, hosts: int, tag: str) -> NetnsLab:
        """The lab a previous process made (its subnet is not needed to tear it down)."""
        lab = cls(hosts, tag)
        lab._created = list(lab.names)
        return lab

    # ---- addresses ----

    def ip(self, i: int) -> str:
        assert self.subnet is not None, "create() first"
        return str(self.subnet.network_address + 1 + i)

    @property
    def gateway(self) -> str:
        assert self.subnet is not None, "create() first"
        return str(self.subnet.network_address + 254)

    def wrap(self, i: int) -> list[str]:
        """The command prefix that runs a server on host i (see `host_command`)."""
        return host_command(self.tag, i)

    def _in(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    # ---- lifecycle ----

    def create(self) -> NetnsLab:
        used = _used_subnets()
        rng = random.Random()
        for _ in range(100):  # a /24 nobody on this machine uses (other test runs make labs too)
            net = ipaddress.ip_network(f"10.{rng.randrange(200, 250)}.{rng.randrange(0, 256)}.0/24")
            if str(net) not in used:
                self.subnet = net
                break
        else:
            raise OSError("no free /24 for a netns lab")
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i, name in enumerate(self.names):
                _run("ip", "netns", "add", name)
                self._created.append(name)
                veth = f"cfv{self.tag}{i}"[:15]
                _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
                _run("ip", "link", "set", veth, "master", self.bridge, "up")
                _run("ip", "-n", name, "link", "set", "lo", "up")
                _run("ip", "-n", name, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
                _run("ip", "-n", name, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise
        log.info("netns lab %s: %d hosts on %s (bridge %s)", self.tag, self.hosts, self.subnet, self.bridge)
        return self

    def destroy(self) -> None:
        """Removes every namespace (their veths go with them) and the bridge."""
        for name in self._created:
            _run("ip", "netns", "del", name, check=False)
        self._created = []
        _run("ip", "link", "del", self.bridge, check=False)

    def __enter__(self) -> NetnsLab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ---- faults ----

    def _ipt(self, i: int, *rule: str) -> None:
        _run(*self._in(i), "iptables", "-w", *rule)

    def cut(self, a: int, peers: Iterable[int | str], both_ways: bool = True) -> None:
        """Host a stops exchanging packets with `peers` (host indexes, or addresses such as
        `gateway`); with both_ways the peers drop a's packets too."""
        for peer in peers:
            addr = peer if isinstance(peer, str) else self.ip(peer)
            self._ipt(a, "-A", "OUTPUT", "-d", addr, "-j", "DROP")
            self._ipt(a, "-A", "INPUT", "-s", addr, "-j", "DROP")
            if both_ways and not isinstance(peer, str):
                self._ipt(peer, "-A", "OUTPUT", "-d", self.ip(a), "-j", "DROP")
                self._ipt(peer, "-A", "INPUT", "-s", self.ip(a), "-j", "DROP")

    def isolate(self, group: Sequence[int], include_gateway: bool = True) -> None:
        """Cuts every host of `group` from every host outside it (and from the test process)."""
        others: list[int | str] = [i for i in range(self.hosts) if i not in group]
        if include_gateway:
            others.append(self.gateway)
        for a in group:
            self.cut(a, others)

    def heal(self) -> None:
        """Drops every fault rule and added delay."""
        for i in range(self.hosts):
            _run(*self._in(i), "iptables", "-w", "-F", check=False)
            if self.delay_supported:
                _run(*self._in(i), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)

    def delay(self, i: int, ms: float, jitter_ms: float = 0.0) -> bool:
        """Adds latency to host i's outgoing packets; False when the kernel has no netem."""
        args = ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms"]
        if jitter_ms:
            args.append(f"{jitter_ms}ms")
        proc = _run(*self._in(i), *args, check=False)
        self.delay_supported = proc.returncode == 0
        if not self.delay_supported:
            log.info("no netem here (%s): latency faults unavailable", proc.stderr.strip())
        return self.delay_supported
