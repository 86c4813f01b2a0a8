"""chainfs.client: RPC clients with routing and retries, and the file layer built on them."""

from chainfs.client.chainclient import ChainClient
from chainfs.client.url import ChainfsURL, parse_url

__all__ = ["ChainClient", "ChainfsURL", "parse_url"]
