"""chainfs as an fsspec filesystem (protocol `chainfs`): the filesystem, its file, their helpers."""
