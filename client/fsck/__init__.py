"""fsck: the namespace against the replicas, data verification, repair of bad copies."""
