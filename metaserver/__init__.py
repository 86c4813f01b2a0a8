"""chainfs.metaserver."""
