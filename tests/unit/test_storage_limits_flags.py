"""The storage server's limit flags (`--stall-timeout`, `--data-max-connections`,
`--data-max-per-client`): defaults from the environment, bad values refused, and the flags a local
cluster passes (cluster/limits.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chainfs.cluster.limits import DataLimits
from chainfs.common import config
from chainfs.storageserver.server import build_parser

BASE = ["--data-dir", "/tmp/x", "--meta", "127.0.0.1:1"]


def test_defaults_come_from_config() -> None:
    args = build_parser().parse_args(BASE)
    assert args.stall_timeout == config.STALL_TIMEOUT
    assert args.data_max_connections == config.DATA_MAX_CONNECTIONS
    assert args.data_max_per_client == config.DATA_MAX_PER_CLIENT


def test_flags_set_the_limits() -> None:
    args = build_parser().parse_args(BASE + ["--stall-timeout", "2.5", "--data-max-connections", "9",
                                             "--data-max-per-client", "3"])
    assert (args.stall_timeout, args.data_max_connections, args.data_max_per_client) == (2.5, 9, 3)


@pytest.mark.parametrize("bad", [["--stall-timeout", "0"], ["--stall-timeout", "-1"],
                                 ["--stall-timeout", "nan"], ["--data-max-connections", "0"],
                                 ["--data-max-per-client", "-2"], ["--data-max-per-client", "1.5"]])
def test_bad_values_are_refused(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(BASE + bad)
    assert exit_.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_the_environment_still_sets_the_defaults() -> None:
    code = ("from chainfs.storageserver.server import build_parser; "
            "a = build_parser().parse_args(['--data-dir', 'x', '--meta', 'h:1']); "
            "print(a.stall_timeout, a.data_max_connections, a.data_max_per_client)")
    env = {"CHAINFS_STALL_TIMEOUT": "4", "CHAINFS_DATA_MAX_CONNECTIONS": "7", "CHAINFS_DATA_MAX_PER_CLIENT": "5"}
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out == ["4.0", "7", "5"]


def test_data_limits_become_flags() -> None:
    assert DataLimits().server_args() == []
    assert DataLimits(stall_timeout=1.5, max_per_client=4).server_args() == \
        ["--stall-timeout", "1.5", "--data-max-per-client", "4"]
    with pytest.raises(ValueError):
        DataLimits(max_connections=0)
