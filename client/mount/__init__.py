"""The FUSE mount: a local file system over the fsspec filesystem."""
