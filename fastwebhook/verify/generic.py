"""The generic `hmac` scheme: header, algorithm, encoding, prefix, optional timestamp and a
`signed` template, for senders without a scheme of their own."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from .base import (RequestView, Scheme, SignedRequest, Verifier, check_options, check_tolerance,
                   read_timestamp, reject, require_secrets, required_header, string_option,
                   tolerance_option, wire_bytes)
from .hmacs import ALGORITHMS, ENCODINGS, any_match, keyed, signature_candidates
from .meta import VERIFY_TOKEN, meta_handshake

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HMAC_OPTIONS = frozenset({"header", "algorithm", "encoding", "prefix", "timestamp_header",
                           "tolerance", "signed", VERIFY_TOKEN})

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
            # The bytes the sender put on the wire, which are what it signed.
            out.append(wire_bytes(value))
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
    tolerance = tolerance_option(options, path)
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

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = required_header(headers, header_key, header, "hmac", raw)
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
        return raw

    handshake = meta_handshake(options, "hmac", path)
    return Verifier(verify, handshake=handshake, needs_request=handshake is not None)


def sign_hmac(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], *,
              headers: Mapping[str, str], **_: Any) -> SignedRequest:
    """Headers for a request signed per ``options``; ``headers`` feed `{header:Name}`."""
    opts = parse_hmac_options(options, "sign")
    out: dict[str, str] = {}
    timestamp = str(int(now))
    if opts.timestamp_header:
        out[opts.timestamp_header] = timestamp
    given = {name.lower(): value for name, value in headers.items()}
    given.update({name.lower(): value for name, value in out.items()})
    try:
        pieces = render(opts.template, raw, timestamp, given)
    except _MissingHeader as missing:
        raise ConfigError("sign.headers", f"the signed template needs header {missing.args[0]}")
    mac = hmac.new(secret, digestmod=opts.digestmod)
    for piece in pieces:
        mac.update(piece)
    out[opts.header] = opts.prefix + ENCODINGS[opts.encoding][2](mac)
    return SignedRequest(out, raw, {})


HMAC = Scheme(name="hmac", factory=build_hmac, sign=sign_hmac)
