"""The client's RPC layer: metadata and storage clients, the data path, placement, retries, pools."""
