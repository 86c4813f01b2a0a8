"""chainfs.cluster."""
