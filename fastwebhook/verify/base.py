"""What every verification scheme shares: the error, the registry entry, option checks.

Lives apart from ``__init__`` so scheme modules can import it while ``__init__`` imports them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, RequestError

# (raw body, lower-cased headers, now) -> None, or raise VerificationError.
Verifier = Callable[[bytes, Mapping[str, str], float], None]

# Keys of a `[workflows.K.verify]` table that belong to the config loader, not to a scheme;
# a scheme's option check skips them so the loader may pass the table as it is.
RESERVED_KEYS = frozenset({"scheme", "secret", "secrets", "secret_file", "secret_files"})


class VerificationError(RequestError):
    """A request whose signature (or token, or timestamp) does not check out.

    ``message`` is all the sender learns; ``detail`` is for our log and may name the header, the
    timestamp skew and the body's SHA-256, but never a secret or an expected signature.
    """

    status = 401
    reason = "signature"


@dataclass(frozen=True, slots=True)
class Scheme:
    """One registry entry. ``build`` validates options once and returns the hot-path closure."""

    name: str
    build: Callable[[Mapping[str, Any], tuple[bytes, ...], str], Verifier]
    needs_secret: bool = True
    # Default dedup key from headers (e.g. GitHub's delivery id); None when the scheme has none.
    dedup_key: Callable[[Mapping[str, str]], str | None] | None = None
    # Default dedup key from the parsed body (e.g. Stripe's event `id`), for later schemes.
    dedup_from_data: Callable[[Any], str | None] | None = None
    # (raw, secret, now, options, headers=...) -> the headers a sender adds; for `send` and tests.
    sign: Callable[..., dict[str, str]] | None = None


def reject(message: str, scheme: str, raw: bytes, **facts: object) -> VerificationError:
    """A VerificationError whose detail carries the facts plus the body's SHA-256.

    The digest is computed here, on the failure path only, so accepted requests never pay for it.
    Callers must pass only facts safe to log (header names, counts, skew), never key material.
    """
    parts = [f"scheme={scheme}"]
    parts.extend(f"{key}={value}" for key, value in facts.items())
    parts.append(f"body_sha256={hashlib.sha256(raw).hexdigest()}")
    return VerificationError(message, detail=" ".join(parts))


def check_options(options: Mapping[str, Any], allowed: frozenset[str], scheme: str,
                  path: str) -> None:
    """Refuse keys the scheme does not know, so a typo (`algoritm`) is not silently ignored."""
    for key in options:
        if key not in allowed and key not in RESERVED_KEYS:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"{path}.{key}",
                              f"unknown option for scheme '{scheme}' (known: {known})")


def require_secrets(secrets: tuple[bytes, ...], scheme: str, path: str) -> None:
    """A keyed scheme without a usable key would accept forgeries or nothing at all."""
    key = ".secret" if len(secrets) <= 1 else ".secrets"
    if not secrets:
        raise ConfigError(path + key, f"scheme '{scheme}' needs a secret (or secrets = [...])")
    for index, secret in enumerate(secrets):
        if not isinstance(secret, bytes) or not secret:
            where = path + key + (f"[{index}]" if len(secrets) > 1 else "")
            raise ConfigError(where, "secret must be a non-empty string")


def string_option(options: Mapping[str, Any], key: str, path: str, default: str | None = None,
                  *, choices: tuple[str, ...] | None = None) -> str | None:
    """A string option (None when absent and no default), checked against ``choices``."""
    value = options.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}.{key}", f"must be a string, not {type(value).__name__}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}.{key}",
                          f"must be one of {', '.join(choices)}, not {value!r}")
    return value


# Longer than any Unix time in seconds for millennia; bounds int() on hostile input.
_MAX_TIMESTAMP_DIGITS = 15


def read_timestamp(headers: Mapping[str, str], key: str, display: str, scheme: str,
                   raw: bytes) -> int:
    """The Unix time a sender put in header ``key``, or a VerificationError saying what is wrong."""
    value = headers.get(key)
    if value is None:
        raise reject(f"missing timestamp header {display}", scheme, raw, header=display)
    text = value.strip()
    # isdigit alone admits non-ASCII digits such as '١٢'; no sender writes those.
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
        raise reject(f"invalid timestamp in header {display}", scheme, raw, header=display)
    return int(text)


def check_tolerance(timestamp: int, now: float, tolerance: float, display: str, scheme: str,
                    raw: bytes) -> None:
    """Refuse replays of old (or far-future) requests; skew is logged, sign included."""
    skew = now - timestamp
    # Written as `not <=` so a NaN clock refuses instead of accepting.
    if not abs(skew) <= tolerance:
        raise reject("timestamp outside tolerance", scheme, raw, header=display,
                     skew=f"{skew:+.0f}s", tolerance=f"{tolerance:g}s")
