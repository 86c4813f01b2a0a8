"""chainfs.cluster: a local multi-process cluster for development, demos and tests."""

from chainfs.cluster.local import LocalCluster
from chainfs.cluster.state import ClusterState

__all__ = ["ClusterState", "LocalCluster"]
