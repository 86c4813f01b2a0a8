"""chainfs.cli."""
