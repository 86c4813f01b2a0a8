"""chainfs.client: RPC clients with routing and retries, and the file layer built on them."""

from chainfs.client.files.chainclient import ChainClient
from chainfs.client.url import ChainfsURL, parse_url
from chainfs.client.fsspec.fs import ChainFileSystem  # after ChainClient: fs builds on it

__all__ = ["ChainClient", "ChainFileSystem", "ChainfsURL", "parse_url"]
