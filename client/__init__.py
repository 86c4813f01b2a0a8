"""chainfs.client."""
