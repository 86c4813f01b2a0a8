"""`chainfs loadtest locust ARGS`: locust on the load test's locustfile, with its flags in --help.

locust prints `--help` before it imports a locustfile, so the flags a locustfile adds never show
there. Here `--help` imports the locustfile first (which registers its flags) and prints locust's
full parser; anything else runs `python -m locust -f loadtest/locustfile.py ARGS` in this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        import chainfs.loadtest.locustfile  # noqa: F401 - registers the chainfs flags' listener
        from locust.argument_parser import get_parser

        parser = get_parser()
        parser.prog = "chainfs loadtest locust"
        parser.print_help()
        return 0
    os.execv(sys.executable, [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *argv])
    return 1  # not reached
