"""Verification schemes: one registry of pure functions over the raw body (SPEC section 6).

A new scheme is one module exposing a `Scheme` plus one line in `SCHEMES` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from . import basic, hmacs
from .base import RESERVED_KEYS, Scheme, VerificationError, Verifier
from .hmacs import verify_github

SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in (
    basic.NONE,
    hmacs.GITHUB,
    hmacs.HMAC,
)}


def get_scheme(name: str, path: str) -> Scheme:
    scheme = SCHEMES.get(name) if isinstance(name, str) else None
    if scheme is None:
        raise ConfigError(path + ".scheme", f"unknown verification scheme {name!r} "
                                            f"(known: {', '.join(sorted(SCHEMES))})")
    return scheme


def build_verifier(scheme: str, options: Mapping[str, Any], secrets: tuple[bytes, ...],
                   path: str) -> Verifier:
    """The request-time check for a `[workflows.K.verify]` table at ``path``."""
    return get_scheme(scheme, path).build(options, tuple(secrets), path)


def sign(scheme: str, raw: bytes, secret: bytes, now: float,
         options: Mapping[str, Any] | None = None, *,
         headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers a sender using ``scheme`` adds to ``raw`` (for `fastwebhook send` and tests)."""
    entry = get_scheme(scheme, "sign")
    if entry.sign is None:
        raise ConfigError("sign.scheme", f"scheme {scheme!r} cannot sign requests")
    return entry.sign(raw, secret, now, options or {}, headers=headers)


__all__ = ["RESERVED_KEYS", "SCHEMES", "Scheme", "VerificationError", "Verifier",
           "build_verifier", "get_scheme", "sign", "verify_github"]
