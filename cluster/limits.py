"""The storage nodes' data-service limits a local cluster starts them with (the storage server's
`--stall-timeout`, `--data-max-connections` and `--data-max-per-client`; docs/security.md).

Kept in cluster.json, so a node restarted by `cluster restart-node` or `cluster up` gets the same.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataLimits:
    """None leaves a limit at the storage server's default (its environment variable, else config.py)."""

    stall_timeout: float | None = None   # seconds a peer may be silent inside a frame
    max_connections: int | None = None   # data connections per node
    max_per_client: int | None = None    # of those, per client (user token, or peer host without tokens)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")

    def server_args(self) -> list[str]:
        """The storage server flags for the limits that are set."""
        flags = (("--stall-timeout", self.stall_timeout), ("--data-max-connections", self.max_connections),
                 ("--data-max-per-client", self.max_per_client))
        return [arg for flag, value in flags if value is not None for arg in (flag, str(value))]
