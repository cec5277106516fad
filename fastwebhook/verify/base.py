"""What every verification scheme shares: the request-time interface, the error, option checks.

Lives apart from ``__init__`` so scheme modules can import it while ``__init__`` imports them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..core.errors import ConfigError, RequestError
from ..core.units import parse_duration
from .request import RequestView

# Keys of a `[workflows.K.verify]` table that belong to the config loader, not to a scheme;
# a scheme's option check skips them so the loader may pass the table as it is.
RESERVED_KEYS = frozenset({"scheme", "secret", "secrets", "secret_file", "secret_files"})
DEFAULT_TOLERANCE = 300.0


class VerificationError(RequestError):
    """A request whose signature (or token, or timestamp) does not check out.

    ``message`` is all the sender learns; ``detail`` is for our log and may name the header, the
    timestamp skew and the body's SHA-256, but never a secret or an expected signature.
    ``headers`` are added to the 401 (HTTP Basic's ``WWW-Authenticate`` challenge).
    """

    status = 401
    reason = "signature"
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Handshake:
    """A provider handshake's answer, sent without running the workflow."""

    status: int
    body: bytes
    content_type: bytes


# (raw body, lower-cased headers, now, RequestView or None) -> the body to parse, or raise.
VerifyFunction = Callable[[bytes, Mapping[str, str], float, "RequestView | None"], bytes]
# Same arguments -> an answer when the request is a provider handshake, else None (or raise).
HandshakeFunction = Callable[[bytes, Mapping[str, str], float, "RequestView | None"],
                             "Handshake | None"]


class Verifier:
    """One workflow's built check. ``verify`` is the scheme's closure itself, not a wrapper,
    so the hot path pays one call."""

    __slots__ = ("scheme", "verify", "handshake", "dedup_key", "dedup_from_data",
                 "needs_request", "secret_headers", "secret_query")

    def __init__(self, verify: VerifyFunction, *, handshake: HandshakeFunction | None = None,
                 needs_request: bool = False, secret_headers: frozenset[str] = frozenset(),
                 secret_query: frozenset[str] = frozenset()):
        self.scheme = ""
        self.verify = verify
        self.handshake = handshake
        # Exact for these options (token with `query`, a `verify_token`), unlike the Scheme flag.
        self.needs_request = needs_request
        self.dedup_key: Callable[[Mapping[str, str]], str | None] | None = None
        self.dedup_from_data: Callable[[Any], str | None] | None = None
        # Lower-cased header and query names carrying a secret: redact them before storing.
        self.secret_headers = secret_headers
        self.secret_query = secret_query

    def __repr__(self) -> str:
        # Deliberately nothing from the closure: that is where the keys live.
        return (f"Verifier(scheme={self.scheme!r}, handshake={self.handshake is not None}, "
                f"needs_request={self.needs_request})")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a sender sends: headers to add, the body (encrypted by wecom/feishu), query
    parameters the signature put in the URL, and that URL when one was given."""

    headers: dict[str, str]
    body: bytes
    query: dict[str, str]
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Scheme:
    """One registry entry. ``build`` checks the options once and returns the request-time
    Verifier."""

    name: str
    factory: Callable[[Mapping[str, Any], tuple[bytes, ...], str], Verifier]
    needs_secret: bool = True
    # True when every configuration reads the RequestView; Verifier.needs_request is exact.
    needs_request: bool = False
    # Default dedup key from headers (e.g. GitHub's delivery id); None when the scheme has none.
    dedup_key: Callable[[Mapping[str, str]], str | None] | None = None
    # Default dedup key from the parsed body (e.g. Stripe's event `id`).
    dedup_from_data: Callable[[Any], str | None] | None = None
    # (raw, secret, now, options, *, headers, url, method, encrypt) -> SignedRequest.
    sign: Callable[..., SignedRequest] | None = None

    def build(self, options: Mapping[str, Any], secrets: tuple[bytes, ...],
              path: str) -> Verifier:
        verifier = self.factory(options, tuple(secrets), path)
        verifier.scheme = self.name
        verifier.dedup_key = self.dedup_key
        verifier.dedup_from_data = self.dedup_from_data
        return verifier


def reject(message: str, scheme: str, raw: bytes, **facts: object) -> VerificationError:
    """A VerificationError whose detail carries the facts plus the body's SHA-256.

    The digest is computed here, on the failure path only, so accepted requests never pay for it.
    Callers must pass only facts safe to log (header names, counts, skew), never key material.
    """
    parts = [f"scheme={scheme}"]
    parts.extend(f"{key}={value}" for key, value in facts.items())
    parts.append(f"body_sha256={hashlib.sha256(raw).hexdigest()}")
    return VerificationError(message, detail=" ".join(parts))


def missing_header(display: str, scheme: str, raw: bytes, kind: str | None = "signature"
                   ) -> VerificationError:
    """The refusal for a header the scheme needs and the request lacks."""
    return reject(f"missing {kind} header {display}" if kind else f"missing header {display}",
                  scheme, raw, header=display)


def required_header(headers: Mapping[str, str], key: str, display: str, scheme: str, raw: bytes,
                    kind: str | None = "signature") -> str:
    """Header ``key`` (lower case) of the request, or a refusal naming it as ``display``."""
    value = headers.get(key)
    if value is None:
        raise missing_header(display, scheme, raw, kind)
    return value


def need_request(request: RequestView | None, scheme: str) -> RequestView:
    """A wiring bug (no RequestView for a scheme that reads the URL) must be loud, not a 401."""
    if request is None:
        raise TypeError(f"scheme '{scheme}' needs the RequestView (see Verifier.needs_request)")
    return request


# --- options -------------------------------------------------------------------------------

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


def secret_option(options: Mapping[str, Any], key: str, path: str) -> bytes | None:
    """A key given as an option (wecom `token`, feishu `encrypt_key`); empty is refused."""
    value = string_option(options, key, path)
    if value is not None and not value:
        raise ConfigError(f"{path}.{key}", "must not be empty")
    return value.encode() if value is not None else None


def tolerance_option(options: Mapping[str, Any], path: str) -> float:
    tolerance = parse_duration(options.get("tolerance", DEFAULT_TOLERANCE), path + ".tolerance")
    if tolerance <= 0:
        raise ConfigError(path + ".tolerance", "must be more than zero")
    return tolerance


# --- comparisons ---------------------------------------------------------------------------

def wire_bytes(value: str) -> bytes:
    """A header value as it came off the wire (the protocol decodes headers as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire (a test, a caller): its UTF-8 then
        return value.encode("utf-8", "surrogatepass")


def token_digests(tokens: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(token).digest() for token in tokens)


def matches_token(given: bytes, digests: tuple[bytes, ...]) -> bool:
    """Whether ``given`` equals one of the tokens behind ``digests``.

    Comparing fixed-size digests keeps even the token's length from showing in the timing, and
    every digest is compared so the time does not say which rotation slot matched.
    """
    digest = hashlib.sha256(given).digest()
    found = False
    for expected in digests:
        found |= hmac.compare_digest(digest, expected)
    return found


def json_object(data: bytes) -> dict | None:
    """``data`` as a JSON object, or None for anything else (hostile bytes included)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def challenge_answer(challenge: object) -> Handshake:
    """Slack's and Feishu's url_verification answer: the challenge echoed as JSON."""
    return Handshake(200, orjson.dumps({"challenge": challenge}), b"application/json")


# --- timestamps ----------------------------------------------------------------------------

# Longer than any Unix time in seconds for millennia; bounds int() on hostile input.
_MAX_TIMESTAMP_DIGITS = 15


def parse_timestamp(text: str, display: str, scheme: str, raw: bytes) -> int:
    text = text.strip()
    # isdigit alone admits non-ASCII digits such as '١٢'; no sender writes those.
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
        raise reject(f"invalid timestamp in header {display}", scheme, raw, header=display)
    return int(text)


def read_timestamp(headers: Mapping[str, str], key: str, display: str, scheme: str,
                   raw: bytes) -> int:
    """The Unix time a sender put in header ``key``, or a VerificationError saying what is wrong."""
    return parse_timestamp(required_header(headers, key, display, scheme, raw, "timestamp"),
                           display, scheme, raw)


def check_tolerance(timestamp: int, now: float, tolerance: float, display: str, scheme: str,
                    raw: bytes) -> None:
    """Refuse replays of old (or far-future) requests; skew is logged, sign included."""
    skew = now - timestamp
    # Written as `not <=` so a NaN clock refuses instead of accepting.
    if not abs(skew) <= tolerance:
        raise reject("timestamp outside tolerance", scheme, raw, header=display,
                     skew=f"{skew:+.0f}s", tolerance=f"{tolerance:g}s")
