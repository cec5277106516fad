"""Twilio: `X-Twilio-Signature`, base64 HMAC-SHA1 over the URL Twilio requested plus the form.

For a form POST each field's name and value follow the URL, names sorted (a repeated field's
values sorted). A JSON body is not signed itself: the URL carries ``bodySHA256``, its hex SHA-256,
and only the URL is signed. Behind a proxy that rewrites scheme or host, the workflow's
`public_url` restores the URL Twilio saw (RequestView.url).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from ..core.errors import ConfigError
from .base import (RequestView, Scheme, SignedRequest, Verifier, check_options, need_request, reject,
                   require_secrets, required_header)
from .hmacs import any_match, base64_mac, base64_signature, keyed, strip_padding
from .request import with_query

HEADER = "X-Twilio-Signature"
_DEFAULT_PORTS = {"https": "443", "http": "80"}
_FORM = "application/x-www-form-urlencoded"


def _twilio_delivery(headers: Mapping[str, str]) -> str | None:
    return headers.get("i-twilio-idempotency-token") or None


def url_forms(url: str) -> tuple[str, ...]:
    """``url`` and, when it has none or the default port, the form with(out) that port.

    Twilio's own libraries try both because its signing side is not consistent about the port.
    A non-default port is always signed, so it is never dropped.
    """
    scheme, sep, rest = url.partition("://")
    default = _DEFAULT_PORTS.get(scheme.lower())
    if not sep or default is None:
        return (url,)
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    host, colon, port = netloc.rpartition(":")
    if colon and port.isdigit() and port.isascii():  # "[::1]" has no port: "1]" is no number
        return (url, f"{scheme}://{host}{tail}") if port == default else (url,)
    return (url, f"{scheme}://{netloc}:{default}{tail}")


def form_suffixes(pairs: list[tuple[str, str]]) -> tuple[str, ...]:
    """The text appended to the URL: names sorted, each repeated field's values sorted.

    Twilio's Python library also collapses repeated equal values; when the form has such
    repeats that variant is offered too, since both have been seen signed.
    """
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    texts = ["".join(name + value for name in sorted(fields) for value in sorted(fields[name]))]
    if any(len(set(values)) != len(values) for values in fields.values()):
        texts.append("".join(name + value for name in sorted(fields)
                             for value in sorted(set(fields[name]))))
    return tuple(texts)


def _form_pairs(raw: bytes) -> list[tuple[str, str]] | None:
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None


def build_twilio(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset(), "twilio", path)
    require_secrets(secrets, "twilio", path)
    keys = keyed(secrets, hashlib.sha1)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        request = need_request(request, "twilio")
        value = required_header(headers, "x-twilio-signature", HEADER, "twilio", raw).strip()
        candidates = [strip_padding(value)] if value and value.isascii() else []
        body_hash = request.query.get("bodySHA256")
        suffixes: tuple[str, ...] = ("",)
        if body_hash is not None:
            expected = hashlib.sha256(raw).hexdigest()
            given = body_hash.strip().lower() if body_hash.isascii() else ""
            if not hmac.compare_digest(expected, given):
                raise reject("invalid signature", "twilio", raw, query="bodySHA256",
                             reason="body hash")
        elif request.method == "POST" and \
                headers.get("content-type", "").lower().startswith(_FORM):
            pairs = _form_pairs(raw)
            if pairs is None:
                raise reject("invalid signature", "twilio", raw, reason="form not UTF-8")
            suffixes = form_suffixes(pairs)
        for url in url_forms(request.url):
            for suffix in suffixes:
                message = (url + suffix).encode("utf-8", "surrogatepass")
                if any_match(keys, (message,), candidates, base64_mac):
                    return raw
        raise reject("invalid signature", "twilio", raw, header=HEADER, url=request.url,
                     signatures=len(candidates), secrets=len(keys))

    return Verifier(verify, needs_request=True)


def sign_twilio(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], *,
                headers: Mapping[str, str], url: str | None = None, method: str = "POST",
                **_: Any) -> SignedRequest:
    """A JSON Content-Type puts ``bodySHA256`` in the URL; a POST otherwise signs ``raw`` as a
    form. ``url`` is the full URL the request goes to."""
    if not url:
        raise ConfigError("sign.url", "twilio signs the URL: pass the full url")
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "").lower()
    query: dict[str, str] = {}
    suffix = ""
    if "json" in content_type:
        query = {"bodySHA256": hashlib.sha256(raw).hexdigest()}
    elif method.upper() == "POST":
        pairs = _form_pairs(raw)
        if pairs is None:
            raise ConfigError("sign.body", "a twilio form body must be UTF-8")
        suffix = form_suffixes(pairs)[0]
    signed_url = with_query(url, query)
    mac = hmac.new(secret, (signed_url + suffix).encode(), hashlib.sha1)
    return SignedRequest({HEADER: base64_signature(mac)}, raw, query)


TWILIO = Scheme(name="twilio", factory=build_twilio, needs_request=True,
                dedup_key=_twilio_delivery, sign=sign_twilio)
