"""chainfs.cluster: a local multi-process cluster for development, demos and tests."""

from chainfs.cluster.local import ClusterState, LocalCluster

__all__ = ["ClusterState", "LocalCluster"]
