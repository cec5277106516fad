"""systemd-analyze for the units' tests: skipped where it is missing, unless the run requires it
($FASTWEBHOOK_REQUIRE_SYSTEMD, which CI sets): then a missing one fails them."""

from __future__ import annotations

import os
import shutil

import pytest


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("FASTWEBHOOK_REQUIRE_SYSTEMD"):
            pytest.fail("systemd-analyze is required here and is not installed")
        pytest.skip("systemd-analyze is not installed")
    return path
