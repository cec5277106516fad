"""systemd for the tests of the units and of a server that talks sd_notify: systemd-analyze,
skipped where it is missing unless the run requires it ($FASTWEBHOOK_REQUIRE_SYSTEMD, which CI
sets: then a missing one fails them), and the notify socket systemd would own."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("FASTWEBHOOK_REQUIRE_SYSTEMD"):
            pytest.fail("systemd-analyze is required here and is not installed")
        pytest.skip("systemd-analyze is not installed")
    return path


class NotifySocket:
    """The datagram socket systemd would own: every message the server sends, as dicts."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30.0) -> dict[str, str]:
        """The first message from now on that holds key (=value)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(message)
            if key in message and (value is None or message[key] == value):
                return message
        raise AssertionError(f"no {key}={value} from the server within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
