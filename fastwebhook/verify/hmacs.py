"""HMAC helpers every MAC scheme reuses, and the `github` scheme (the hot one).

Keys are prepared once at build time as RFC 2104's two hash states, the key absorbed into
each: a request's MAC is then two copies, two updates and a digest, all of them C calls.  Copying
a keyed `hmac.HMAC` instead skips the key schedule too, but its copy, update and digest are
Python methods around the same C objects: ~0.8 us more a request (2.3 against 1.5 us for the
micro benchmark's 1,160-byte body), `hmac.new` or one-shot `hmac.digest` more still.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from operator import methodcaller
from typing import Any

from .base import (RequestView, Scheme, SignedRequest, Verifier, check_options, reject, require_secrets,
                   required_header)
from .meta import VERIFY_TOKEN, meta_handshake

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}

# A header may list several signatures (adnanh/webhook allows it; rotating senders do it), but
# no sender lists more than a few; the cap bounds the work a hostile header can cause.
MAX_SIGNATURES = 16


Keyed = tuple[Any, Any]   # (inner, outer): hash objects with the padded key absorbed
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


def keyed(secrets: Iterable[bytes], digestmod: Callable[..., Any]) -> tuple[Keyed, ...]:
    """Per secret, HMAC's inner and outer hash states with the key absorbed (RFC 2104: a key
    longer than the block is hashed first, a shorter one padded with zeros), to be `.copy()`-ed
    per request by `mac`."""
    prepared = []
    for secret in secrets:
        inner, outer = digestmod(), digestmod()
        if len(secret) > inner.block_size:
            secret = digestmod(secret).digest()
        secret = secret.ljust(inner.block_size, b"\0")
        inner.update(secret.translate(_INNER_PAD))
        outer.update(secret.translate(_OUTER_PAD))
        prepared.append((inner, outer))
    return tuple(prepared)


def mac(key: Keyed, pieces: Iterable[bytes]) -> Any:
    """HMAC(key, the pieces joined), as a finished hash object (`hex_mac` or `base64_mac` it)."""
    inner, outer = key[0].copy(), key[1].copy()
    for piece in pieces:
        inner.update(piece)
    outer.update(inner.digest())
    return outer


# a finished hash object's hex digest (`mac`'s, or an hmac.HMAC when signing), called from C:
# no Python frame on the hot path
hex_mac: Callable[[Any], str] = methodcaller("hexdigest")


def base64_mac(mac: Any) -> str:
    # Padding is dropped on both sides so senders that omit it still match.
    return base64.b64encode(mac.digest()).decode("ascii").rstrip("=")


def strip_padding(token: str) -> str:
    return token.rstrip("=")


def base64_signature(mac: hmac.HMAC) -> str:
    return base64.b64encode(mac.digest()).decode("ascii")


# encoding -> (what verify compares, how a received token is normalised, what sign sends).
# Hex compares case-insensitively: some senders upper-case it and that reveals nothing.
ENCODINGS: dict[str, tuple[Callable[[hmac.HMAC], str], Callable[[str], str],
                           Callable[[hmac.HMAC], str]]] = {
    "hex": (hex_mac, str.lower, hex_mac),
    "base64": (base64_mac, strip_padding, base64_signature),
}


def signature_candidates(value: str, prefix: str, normalize: Callable[[str], str]) -> list[str]:
    """The signatures in a header value: split on ',' and whitespace, prefix removed.

    Non-ASCII tokens are dropped because `hmac.compare_digest` raises on non-ASCII str; they
    could never match an encoded digest anyway.
    """
    # Nearly every header holds one signature; skipping the split saves a third of this call.
    if "," in value or " " in value or "\t" in value:
        tokens = value.replace(",", " ").split()[:MAX_SIGNATURES]
    else:
        tokens = [value]
    candidates = []
    for token in tokens:
        token = token.removeprefix(prefix)
        if token and token.isascii():
            candidates.append(normalize(token))
    return candidates


def any_match(keys: tuple[Keyed, ...], pieces: Iterable[bytes], candidates: list[str],
              encode: Callable[[Any], str]) -> bool:
    """Whether any secret's MAC over ``pieces`` equals any candidate (constant-time compare)."""
    if not candidates:
        return False
    for key in keys:
        expected = encode(mac(key, pieces))
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return True
    return False


# --- github -------------------------------------------------------------------------------

GITHUB_HEADER = "X-Hub-Signature-256"
_GITHUB_OPTIONS = frozenset({VERIFY_TOKEN})


def _github_delivery(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-github-delivery") or None


def build_github(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, _GITHUB_OPTIONS, "github", path)
    require_secrets(secrets, "github", path)
    keys = keyed(secrets, hashlib.sha256)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = required_header(headers, "x-hub-signature-256", GITHUB_HEADER, "github", raw)
        candidates = signature_candidates(value, "sha256=", str.lower)
        if not any_match(keys, (raw,), candidates, hex_mac):
            raise reject("invalid signature", "github", raw, header=GITHUB_HEADER,
                         signatures=len(candidates), secrets=len(keys))
        return raw

    handshake = meta_handshake(options, "github", path)
    return Verifier(verify, handshake=handshake, needs_request=handshake is not None)


def verify_github(raw: bytes, headers: Mapping[str, str], secrets: tuple[bytes, ...],
                  now: float) -> None:
    """The pure form; the server uses `build_github`'s closure, which keeps prepared keys."""
    build_github({}, secrets, "verify").verify(raw, headers, now, None)


def sign_github(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
                ) -> SignedRequest:
    digest = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return SignedRequest({GITHUB_HEADER: "sha256=" + digest}, raw, {})


GITHUB = Scheme(name="github", factory=build_github, dedup_key=_github_delivery, sign=sign_github)
