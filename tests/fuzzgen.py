"""Seeded random protobuf requests and data-port frames for the fuzz test
(tests/integration/test_fuzz.py), built from the generated descriptors, so new fields are covered
as soon as they are in a .proto.

Every value of one case comes from one `random.Random(f"{seed}:{case}")`: a failure names its seed
and case, and `case_rng(seed, case)` replays exactly that request. Values are biased towards the
edges that break servers (0, -1, the type's bounds, huge lengths, `..`, NUL bytes, names past
255 bytes, random bytes) and towards ids that exist in the cluster under test (`Pool`), so
requests also reach the code behind the first lookup.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message

_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, (1 << 32) - 1),
    d.FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, (1 << 64) - 1),
}
_EDGE_INTS = (0, 1, 2, -1, 3, 7, 64, 4095, 4096, 65536, (1 << 20) + 1, 1 << 26, (1 << 31) - 1, 1 << 31,
              (1 << 32) - 1, 1 << 32, 1 << 50, 1 << 53, (1 << 63) - 1, (1 << 64) - 1, -(1 << 31), -(1 << 63))
_FLOATS = (0.0, -0.0, 1.0, -1.0, 1e-9, 1e308, -1e308, float("inf"), float("-inf"), float("nan"))


@dataclass
class Pool:
    """Values that exist in the cluster under test: the generator draws on them half the time."""

    ints: list[int] = field(default_factory=list)      # inode, session, chain, target and node ids
    paths: list[str] = field(default_factory=list)     # files and directories that exist
    strings: list[str] = field(default_factory=list)   # addresses, request ids, names
    blobs: list[bytes] = field(default_factory=list)   # tokens, capabilities, ids as bytes


def harvest(message: Message, pool: Pool) -> None:
    """Adds every id, string and byte string of a reply (inodes, sessions, capabilities, whatever
    fields the protos gain) to the pool, so requests can name things that exist."""
    for f, value in message.ListFields():
        for item in (value if _repeated(f) else [value]):
            if isinstance(item, Message):
                harvest(item, pool)
            elif isinstance(item, bool):
                continue
            elif isinstance(item, int):
                pool.ints.append(item)
            elif isinstance(item, str) and len(item) <= 4096:
                pool.strings.append(item)
            elif isinstance(item, bytes) and len(item) <= 4096:
                pool.blobs.append(item)


def _repeated(f: d.FieldDescriptor) -> bool:
    """Whether a field is repeated (protobuf 7 has only `is_repeated`, 6.x only `label` before 6.31)."""
    flag = getattr(f, "is_repeated", None)
    return bool(flag) if flag is not None else f.label == d.FieldDescriptor.LABEL_REPEATED


def case_rng(seed: int, case: str) -> random.Random:
    return random.Random(f"{seed}:{case}")


class Fuzzer:
    """Random values and messages from one seeded `random.Random`."""

    def __init__(self, rng: random.Random, pool: Pool, marker: str) -> None:
        self.rng = rng
        self.pool = pool
        self.marker = marker  # a name no file outside the test's own dirs may ever get

    # ---- scalars ----

    def integer(self, lo: int, hi: int) -> int:
        r = self.rng.random()
        if r < 0.35 and self.pool.ints:
            value = self.rng.choice(self.pool.ints) + self.rng.choice((0, 0, 0, 1, -1))
        elif r < 0.8:
            value = self.rng.choice(_EDGE_INTS + (lo, hi))
        else:
            value = self.rng.randint(lo, hi)
        return value if lo <= value <= hi else lo + value % (hi - lo + 1)

    def floating(self) -> float:
        return self.rng.choice(_FLOATS) if self.rng.random() < 0.7 else self.rng.uniform(-1e6, 1e6)

    def text(self) -> str:
        rng, m = self.rng, self.marker
        r = rng.random()
        if r < 0.5 and self.pool.paths:  # half the time a path that exists, as it is or a little off
            base = rng.choice(self.pool.paths)
            return rng.choice((base, base, base, base + "/" + m, base + "/../" + m, base + "/./x", base + "\x00" + m,
                               base.rstrip("/") + "/" + "n" * 256))
        if r < 0.6 and self.pool.strings:
            real = rng.choice(self.pool.strings)
            if real and rng.random() < 0.3:  # one character off: a forged session id or capability
                at = rng.randrange(len(real))
                return real[:at] + rng.choice("0aZ._-/") + real[at + 1:]
            return real
        return rng.choice((
            "", "/", ".", "..", "/..", "//", "/./", "../" + m, "../../" + m, "../../../../" + m,
            "/../../" + m, "/a/../../../" + m, "a/b/../../../" + m, m, "/" + m, "/" + m + "/..",
            "/x\x00y", "\x00", "/\x00/" + m, "/" + "a" * 255, "/" + "a" * 256, "/" + "b" * 4097,
            "/" + "/".join(["d"] * 600), "x" * 70000, "/ü/✓/" + m, "/\u202e/" + m, "\n\r\t", "%2e%2e/" + m,
            "127.0.0.1:1", "127.0.0.1:0", "host:99999", "[::1]:80", "::1:80", "a b:80", "h:p", ":",
            "cfs1.e30.AAAA", "client:1", "-" * 129,
            "".join(chr(rng.randint(32, 0xD7FF)) for _ in range(rng.randint(1, 40))),
        ))

    def blob(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.3 and self.pool.blobs:
            b = bytearray(rng.choice(self.pool.blobs))
            if b and rng.random() < 0.5:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)  # one bit off: a forgery
            return bytes(b)
        n = rng.choice((0, 1, 8, 16, 17, 32, 100, 4096, 65537))
        return rng.randbytes(n)

    # ---- messages ----

    def message(self, cls: type[Message], depth: int = 0) -> Message:
        msg = cls()
        fields = msg.DESCRIPTOR.fields
        # Most requests set most fields, and one bad field decides the answer; a sparse one sets
        # one or two, so the others' defaults let it reach further into the handler.
        skip = 1 - 1.5 / max(len(fields), 2) if self.rng.random() < 0.4 else 0.35
        for f in fields:
            if self.rng.random() < skip:
                continue  # left at its default
            if _repeated(f):
                n = self.rng.choice((0, 1, 2, 3, 1025)) if f.type != d.FieldDescriptor.TYPE_MESSAGE \
                    else self.rng.choice((0, 1, 2, 3))
                for _ in range(n):
                    if f.type == d.FieldDescriptor.TYPE_MESSAGE:
                        self._fill(getattr(msg, f.name).add(), depth + 1)
                    else:
                        getattr(msg, f.name).append(self.scalar(f))
            elif f.type == d.FieldDescriptor.TYPE_MESSAGE:
                if depth < 4:
                    self._fill(getattr(msg, f.name), depth + 1)
                else:
                    getattr(msg, f.name).SetInParent()
            else:
                setattr(msg, f.name, self.scalar(f))
        return msg

    def _fill(self, sub: Message, depth: int) -> None:
        sub.CopyFrom(self.message(type(sub), depth))
        sub.SetInParent()

    def scalar(self, f: d.FieldDescriptor) -> Any:
        t = f.type
        if t in _INT_RANGES:
            return self.integer(*_INT_RANGES[t])
        if t in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
            value = self.floating()
            if t == d.FieldDescriptor.TYPE_FLOAT and math.isfinite(value) and abs(value) > 3e38:
                value = math.copysign(math.inf, value)  # past float32: its infinity
            return value
        if t == d.FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == d.FieldDescriptor.TYPE_STRING:
            return self.text()
        if t == d.FieldDescriptor.TYPE_BYTES:
            return self.blob()
        if t == d.FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in f.enum_type.values]
            return self.rng.choice(known + [len(known) + 7, -1, 1 << 30])
        raise TypeError(f"no generator for field type {t} ({f.full_name})")

    def mutate(self, raw: bytes) -> bytes:
        """Wire bytes a parser may choke on: flipped bits, cuts, splices, garbage."""
        rng = self.rng
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0 and b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            elif op == 1 and b:
                del b[rng.randrange(len(b)):]
            elif op == 2:
                at = rng.randrange(len(b) + 1)
                b[at:at] = rng.randbytes(rng.randint(1, 16))
            elif op == 3:
                b += bytes([rng.randrange(256)]) + b"\xff\xff\xff\xff\x0f"  # a tag with a huge varint
            else:
                b = bytearray(rng.randbytes(rng.randint(0, 64)))
        return bytes(b)


def message_class(descriptor: d.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)
