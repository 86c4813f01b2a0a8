"""Fault tests: real processes killed (SIGKILL) and paused (SIGSTOP); see harness.py."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: kills and pauses real server processes")
