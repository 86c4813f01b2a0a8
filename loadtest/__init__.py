"""chainfs.loadtest."""
