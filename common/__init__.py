"""chainfs.common."""
