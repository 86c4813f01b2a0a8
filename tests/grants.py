"""Chunk capabilities for tests that talk to storage nodes beneath the file API on purpose (a
register written chunk by chunk, a forged lost update): signed with the cluster's secret, as the
metaserver would sign them, and handed to a client's capability cache."""

from __future__ import annotations

from chainfs.client import ChainClient
from chainfs.cluster import LocalCluster
from chainfs.cluster.auth_files import load_secret
from chainfs.common import capabilities


def capability(cluster: LocalCluster, inode_id: int, rights: str = capabilities.SESSION_RIGHTS,
               ttl: float = 3600.0, holder: str = "") -> str:
    """A capability for `inode_id` ("" on an insecure cluster: nothing is checked there)."""
    if not cluster.state.auth:
        return ""
    return capabilities.issue(load_secret(cluster.root), inode_id, rights, ttl, holder)


def grant(cluster: LocalCluster, client: ChainClient, inode_id: int,
          rights: str = capabilities.SESSION_RIGHTS) -> ChainClient:
    """`client` may now read, write and remove the chunks of `inode_id` directly."""
    client.meta.caps.learn(inode_id, capability(cluster, inode_id, rights), rights)
    return client
