"""gRPC under gevent: switched to gevent-cooperative polling once, when gevent has monkey-patched.

locust patches at import and then runs every user as a greenlet; gRPC's default polling would block
the hub, so the fsspec filesystem calls `init_gevent_if_patched` from its constructor.
"""

from __future__ import annotations

import logging
import sys
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
_gevent_ready = False


def init_gevent_if_patched() -> bool:
    """Lets gRPC cooperate with gevent's hub, when (and only when) gevent has monkey-patched.

    grpc's gevent integration must run after `gevent.monkey.patch_all()` and before any gRPC
    channel exists; chainfs creates channels lazily, so calling this from the filesystem's
    constructor is early enough for locust (which patches at import). Without patching, nothing
    changes: plain threads keep the default gRPC polling.
    """
    global _gevent_ready
    if _gevent_ready or "gevent" not in sys.modules:
        return _gevent_ready
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - a module named gevent without gevent.monkey
        return False
    if not monkey.is_module_patched("socket"):
        return False
    with _lock:
        if not _gevent_ready:
            import grpc.experimental.gevent as grpc_gevent

            grpc_gevent.init_gevent()
            _gevent_ready = True
            log.debug("gRPC switched to gevent-cooperative polling")
    return True
