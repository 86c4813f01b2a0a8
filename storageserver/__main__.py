"""`python -m chainfs.storageserver --data-dir DIR --meta HOST:PORT ...`"""

from chainfs.storageserver.server import run_server

raise SystemExit(run_server())
