"""How a server process runs, one shape for the metaserver and the storage server.

A server object opens its stores when constructed and binds nothing; `start(stop)` binds, serves
and returns the bound port; `stop(grace)` stops serving and closes everything (twice is fine).
`run()` drives that shape in a process: it installs SIGTERM/SIGINT handlers, starts the server,
publishes the bound ports (metrics first, then the gRPC port, each written atomically, so whoever
polls for the port file finds a serving server), waits for a signal and stops the server.

The flags every server process has (address, ports, port files, TLS, tokens, log level) and the
logging set-up live here too, so the two servers' command lines cannot drift apart.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any, Protocol

from chainfs.common import auth, config, tls
from chainfs.common.errors import ChainfsError
from chainfs.common.rpc import write_port_file

log = logging.getLogger(__name__)


class Server(Protocol):
    """What `run()` asks of a server."""

    @property
    def metrics(self) -> Any:
        """Its /metrics endpoint (with a `.port`) once started, or None when turned off."""

    def start(self, stop: threading.Event | None = None) -> int:
        """Binds and serves; `stop`, once set, cuts a wait at start-up short. Returns the port."""

    def stop(self, grace: float = 2.0) -> None:
        """Stops serving (in-flight calls get `grace` seconds) and closes everything."""


def add_listen_args(parser: argparse.ArgumentParser, published: str = "once serving") -> None:
    """--host, --port, --port-file and the metrics endpoint's --metrics-port(-file)."""
    parser.add_argument("--host", default=config.DEFAULT_HOST, help="address to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0 picks a free one)")
    parser.add_argument("--port-file", default=None, help=f"write the bound port here {published}")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="port of the Prometheus /metrics endpoint (0 picks a free one, -1 turns it off)")
    parser.add_argument("--metrics-port-file", help="write the bound metrics port here (before --port-file)")


def add_process_args(parser: argparse.ArgumentParser) -> None:
    """TLS, tokens and --log-level: what every server process is configured with."""
    tls.add_server_args(parser)
    auth.add_server_args(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")


def setup_logging(args: argparse.Namespace, tag: str = "") -> None:
    """Root logging at --log-level; `tag` starts every line (which server wrote it)."""
    prefix = f"{tag} " if tag else ""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
    )


def stop_on_signal() -> threading.Event:
    """An event that SIGTERM and SIGINT set (handlers are installed from the main thread only)."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    return stop


def publish_ports(args: argparse.Namespace, server: Server, port: int) -> None:
    """Writes --metrics-port-file, then --port-file (the one whoever waits for us polls)."""
    if getattr(args, "metrics_port_file", None) and server.metrics is not None:
        write_port_file(args.metrics_port_file, server.metrics.port)
    if getattr(args, "port_file", None):
        write_port_file(args.port_file, port)


def run(server: Server, args: argparse.Namespace) -> int:
    """Starts `server`, publishes its ports and serves until SIGTERM/SIGINT; the exit status."""
    stop = stop_on_signal()
    try:
        port = server.start(stop)
    except ChainfsError as exc:
        server.stop(grace=0)
        if stop.is_set():
            log.info("stopped before it was serving")
            return 0
        log.error("could not start: %s", exc.message)
        return 1
    except BaseException:
        server.stop(grace=0)
        raise
    publish_ports(args, server, port)
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    server.stop()
    return 0
