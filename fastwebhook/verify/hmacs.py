"""HMAC schemes: `github` and the generic `hmac`, plus the helpers later HMAC schemes reuse.

Keys are prepared once at build time: copying a keyed OpenSSL HMAC object skips the key
schedule, which measured faster than `hmac.new` or one-shot `hmac.digest` per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..units import parse_duration
from .base import (Scheme, Verifier, check_options, check_tolerance, read_timestamp, reject,
                   require_secrets, string_option)

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}

# A header may list several signatures (adnanh/webhook allows it; rotating senders do it), but
# no sender lists more than a few; the cap bounds the work a hostile header can cause.
MAX_SIGNATURES = 16


def keyed(secrets: Iterable[bytes], digestmod: Callable[..., Any]) -> tuple[hmac.HMAC, ...]:
    """One keyed HMAC per secret, to be `.copy()`-ed per request."""
    return tuple(hmac.new(secret, digestmod=digestmod) for secret in secrets)


def _hex_mac(mac: hmac.HMAC) -> str:
    return mac.hexdigest()


def _base64_mac(mac: hmac.HMAC) -> str:
    # Padding is dropped on both sides so senders that omit it still match.
    return base64.b64encode(mac.digest()).decode("ascii").rstrip("=")


def _strip_padding(token: str) -> str:
    return token.rstrip("=")


def _base64_signature(mac: hmac.HMAC) -> str:
    return base64.b64encode(mac.digest()).decode("ascii")


# encoding -> (what verify compares, how a received token is normalised, what sign sends).
# Hex compares case-insensitively: some senders upper-case it and that reveals nothing.
ENCODINGS: dict[str, tuple[Callable[[hmac.HMAC], str], Callable[[str], str],
                           Callable[[hmac.HMAC], str]]] = {
    "hex": (_hex_mac, str.lower, _hex_mac),
    "base64": (_base64_mac, _strip_padding, _base64_signature),
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


def any_match(keys: tuple[hmac.HMAC, ...], pieces: Iterable[bytes], candidates: list[str],
              encode: Callable[[hmac.HMAC], str]) -> bool:
    """Whether any secret's MAC over ``pieces`` equals any candidate (constant-time compare)."""
    if not candidates:
        return False
    for key in keys:
        mac = key.copy()
        for piece in pieces:
            mac.update(piece)
        expected = encode(mac)
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate):
                return True
    return False


# --- github -------------------------------------------------------------------------------

GITHUB_HEADER = "X-Hub-Signature-256"


def _github_delivery(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-github-delivery") or None


def build_github(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset(), "github", path)
    require_secrets(secrets, "github", path)
    keys = keyed(secrets, hashlib.sha256)

    def verify(raw: bytes, headers: Mapping[str, str], now: float) -> None:
        value = headers.get("x-hub-signature-256")
        if value is None:
            raise reject(f"missing signature header {GITHUB_HEADER}", "github", raw,
                         header=GITHUB_HEADER)
        candidates = signature_candidates(value, "sha256=", str.lower)
        if not any_match(keys, (raw,), candidates, _hex_mac):
            raise reject("invalid signature", "github", raw, header=GITHUB_HEADER,
                         signatures=len(candidates), secrets=len(keys))

    return verify


def verify_github(raw: bytes, headers: Mapping[str, str], secrets: tuple[bytes, ...],
                  now: float) -> None:
    """The pure form; the server uses `build_github`'s closure, which keeps prepared keys."""
    build_github({}, secrets, "verify")(raw, headers, now)


def sign_github(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any] | None = None,
                *, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    digest = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return {GITHUB_HEADER: "sha256=" + digest}


GITHUB = Scheme(name="github", build=build_github, dedup_key=_github_delivery, sign=sign_github)


# --- generic hmac -------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HMAC_OPTIONS = frozenset({"header", "algorithm", "encoding", "prefix", "timestamp_header",
                           "tolerance", "signed"})
DEFAULT_TOLERANCE = 300.0

# A compiled `signed` template is a tuple of pieces: ("literal", bytes), ("body",),
# ("timestamp",) or ("header", lower-cased name, name as written).


class _MissingHeader(LookupError):
    """A `{header:Name}` the request (or the headers given to `sign`) lacks."""


def compile_template(text: str, path: str) -> tuple[tuple[Any, ...], ...]:
    pieces: list[tuple[Any, ...]] = []
    position = 0
    for match in [*_PLACEHOLDER.finditer(text), None]:
        literal = text[position:match.start() if match else len(text)]
        if "{" in literal or "}" in literal:
            raise ConfigError(path, f"unbalanced brace in {text!r}")
        if literal:
            pieces.append(("literal", literal.encode()))
        if match is None:
            break
        position = match.end()
        name = match[1]
        if name in ("body", "timestamp"):
            pieces.append((name,))
        elif name.startswith("header:") and name[7:].strip():
            header = name[7:].strip()
            pieces.append(("header", header.lower(), header))
        else:
            raise ConfigError(path, f"unknown placeholder {{{name}}} "
                                    "(known: {body}, {timestamp}, {header:Name})")
    if ("body",) not in pieces:
        # Without {body} the body would be accepted unauthenticated.
        raise ConfigError(path, "the signed template must include {body}")
    return tuple(pieces)


def render(template: tuple[tuple[Any, ...], ...], raw: bytes, timestamp: str,
           headers: Mapping[str, str]) -> list[bytes]:
    out = []
    for piece in template:
        kind = piece[0]
        if kind == "body":
            out.append(raw)
        elif kind == "literal":
            out.append(piece[1])
        elif kind == "timestamp":
            out.append(timestamp.encode())
        else:
            value = headers.get(piece[1])
            if value is None:
                raise _MissingHeader(piece[2])
            out.append(value.encode())
    return out


@dataclass(frozen=True, slots=True)
class HmacOptions:
    header: str
    digestmod: Callable[..., Any]
    encoding: str
    prefix: str
    timestamp_header: str | None
    tolerance: float
    template: tuple[tuple[Any, ...], ...]


def parse_hmac_options(options: Mapping[str, Any], path: str) -> HmacOptions:
    check_options(options, _HMAC_OPTIONS, "hmac", path)
    header = string_option(options, "header", path)
    if not header or not header.strip():
        raise ConfigError(path + ".header", "scheme 'hmac' needs the signature header's name")
    algorithm = string_option(options, "algorithm", path, "sha256", choices=tuple(ALGORITHMS))
    encoding = string_option(options, "encoding", path, "hex", choices=tuple(ENCODINGS))
    prefix = string_option(options, "prefix", path, "")
    timestamp_header = string_option(options, "timestamp_header", path)
    if timestamp_header is not None and not timestamp_header.strip():
        raise ConfigError(path + ".timestamp_header", "must not be empty")
    if "tolerance" in options and timestamp_header is None:
        raise ConfigError(path + ".tolerance", "a tolerance needs timestamp_header")
    tolerance = parse_duration(options.get("tolerance", DEFAULT_TOLERANCE), path + ".tolerance")
    if tolerance <= 0:
        raise ConfigError(path + ".tolerance", "must be more than zero")
    signed = string_option(options, "signed", path,
                           "{timestamp}.{body}" if timestamp_header else "{body}")
    template = compile_template(signed, path + ".signed")
    has_timestamp = ("timestamp",) in template
    if has_timestamp and timestamp_header is None:
        raise ConfigError(path + ".signed", "{timestamp} needs timestamp_header")
    if timestamp_header is not None and not has_timestamp:
        # An unsigned timestamp can be rewritten by anyone, so checking it would prove nothing.
        raise ConfigError(path + ".signed", "with timestamp_header the template must include "
                                            "{timestamp}")
    return HmacOptions(header.strip(), ALGORITHMS[algorithm], encoding, prefix,
                       timestamp_header.strip() if timestamp_header else None, tolerance,
                       template)


def build_hmac(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    opts = parse_hmac_options(options, path)
    require_secrets(secrets, "hmac", path)
    keys = keyed(secrets, opts.digestmod)
    encode, normalize, _ = ENCODINGS[opts.encoding]
    header, header_key, prefix = opts.header, opts.header.lower(), opts.prefix
    timestamp_header = opts.timestamp_header
    timestamp_key = timestamp_header.lower() if timestamp_header else None
    template, tolerance = opts.template, opts.tolerance
    body_only = template == (("body",),)

    def verify(raw: bytes, headers: Mapping[str, str], now: float) -> None:
        value = headers.get(header_key)
        if value is None:
            raise reject(f"missing signature header {header}", "hmac", raw, header=header)
        timestamp = 0
        if timestamp_key is not None:
            timestamp = read_timestamp(headers, timestamp_key, timestamp_header, "hmac", raw)
        if body_only:
            pieces: Iterable[bytes] = (raw,)
        else:
            try:
                pieces = render(template, raw, headers.get(timestamp_key, ""), headers)
            except _MissingHeader as missing:
                raise reject(f"missing header {missing.args[0]}", "hmac", raw,
                             header=missing.args[0]) from None
        candidates = signature_candidates(value, prefix, normalize)
        if not any_match(keys, pieces, candidates, encode):
            raise reject("invalid signature", "hmac", raw, header=header,
                         signatures=len(candidates), secrets=len(keys))
        # After the MAC, so a logged skew is the skew of a genuine (replayed) request.
        if timestamp_key is not None:
            check_tolerance(timestamp, now, tolerance, timestamp_header, "hmac", raw)

    return verify


def sign_hmac(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any] | None = None,
              *, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for a request signed per ``options``; ``headers`` feed `{header:Name}`."""
    opts = parse_hmac_options(options or {}, "sign")
    out: dict[str, str] = {}
    timestamp = str(int(now))
    if opts.timestamp_header:
        out[opts.timestamp_header] = timestamp
    given = {name.lower(): value for name, value in (headers or {}).items()}
    given.update({name.lower(): value for name, value in out.items()})
    try:
        pieces = render(opts.template, raw, timestamp, given)
    except _MissingHeader as missing:
        raise ConfigError("sign.headers", f"the signed template needs header {missing.args[0]}")
    mac = hmac.new(secret, digestmod=opts.digestmod)
    for piece in pieces:
        mac.update(piece)
    out[opts.header] = opts.prefix + ENCODINGS[opts.encoding][2](mac)
    return out


HMAC = Scheme(name="hmac", build=build_hmac, sign=sign_hmac)
