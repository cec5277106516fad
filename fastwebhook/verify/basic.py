"""The `none` scheme: accepts every request (the default when a workflow sets no verify table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import Scheme, Verifier, check_options


def _accept(raw: bytes, headers: Mapping[str, str], now: float) -> None:
    return None


def build_none(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset(), "none", path)
    if secrets:
        # A secret here means the author believes the hook is verified; it would not be.
        raise ConfigError(path + ".secret",
                          "scheme 'none' checks nothing; remove the secret or choose a scheme")
    return _accept


def sign_none(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any] | None = None,
              *, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    return {}


NONE = Scheme(name="none", build=build_none, needs_secret=False, sign=sign_none)
