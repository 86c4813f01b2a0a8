"""The argparse setup every `chainfs` subcommand shares: descriptions, defaults, flags anywhere.

Why a parser class: each subcommand's help must say what it does and show its defaults, and
global flags (`--debug`) must work after the subcommand too (`chainfs ls URL --debug`), so every
(sub)parser is made the same way instead of each module remembering to.
"""

from __future__ import annotations

import argparse
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: X)` where a default says something (not for flags or unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "%(default)" in text
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction))):
            return text
        return super()._get_help_string(action)


class SubParsers(argparse._SubParsersAction):
    """Every subcommand gets its one-line help as its description and the global flags."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if "help" in kwargs and "description" not in kwargs:
            text = kwargs["help"]
            kwargs["description"] = text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
        parser = super().add_parser(name, **kwargs)
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show tracebacks and debug logs")
        parser.add_argument("--no-short-circuit", action="store_true", default=argparse.SUPPRESS,
                            help="read every chunk over the network, even from replicas on this machine")
        return parser


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", SubParsers)


def human_size_parser(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand where `-h` means --human-readable, as in ls and du; help stays `--help`."""
    p = sub.add_parser(name, add_help=False, **kwargs)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-h", "--human-readable", dest="human", action="store_true",
                   help="sizes as 1.5 MiB instead of bytes")
    return p
