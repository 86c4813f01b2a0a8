"""chainfs.engine."""
