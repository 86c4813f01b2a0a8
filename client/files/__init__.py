"""The whole-file API over the RPC layer: ChainClient, write sessions, in-place chunk edits."""
