"""chainfs.storageserver."""
