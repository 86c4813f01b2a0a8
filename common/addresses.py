"""HOST:PORT addresses, parsed one way everywhere (clients, servers, the data path), and the
per-address settings of a process."""

from __future__ import annotations

import threading
from typing import Generic, Iterable, TypeVar

T = TypeVar("T")


def split_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port); ValueError naming what is wrong."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class PerAddress(Generic[T]):
    """A process-wide setting chosen per address (a token, a TLS config): what `register` said of
    an address, else the process's default. Tokens (`common.auth`) and TLS configs (`common.tls`)
    are both looked up this way, on every channel `ChannelPool` hands out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_address: dict[str, T | None] = {}
        self.default: T | None = None

    def set_default(self, value: T | None) -> None:
        with self._lock:
            self.default = value

    def register(self, addresses: Iterable[str], value: T | None) -> None:
        """Connections to these addresses use `value` (None: none), whatever the default."""
        with self._lock:
            for address in addresses:
                if address:
                    self._by_address[address] = value

    def forget(self, addresses: Iterable[str]) -> None:
        """Drops what `register` said of these addresses (a cluster that stopped)."""
        with self._lock:
            for address in addresses:
                self._by_address.pop(address, None)

    def get(self, address: str) -> T | None:
        """One dict read, no lock: writers swap whole entries, which a reader sees before or after."""
        return self._by_address.get(address, self.default)

    def first_registered(self, addresses: Iterable[str]) -> T | None:
        """The value registered for the first of `addresses` that has one, else the default."""
        with self._lock:
            for address in addresses:
                value = self._by_address.get(address)
                if value:
                    return value
            return self.default
