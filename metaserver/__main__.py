"""`python -m chainfs.metaserver --data-dir DIR [...]`: run one metaserver until SIGTERM."""

from chainfs.metaserver.server import run_server

if __name__ == "__main__":
    raise SystemExit(run_server())
