"""Verification schemes: one registry of pure functions over the raw body (SPEC section 6).

A new scheme is one module exposing a `Scheme` plus one line in `SCHEMES` below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError
from . import basic, feishu, generic, hmacs, standard, twilio, vendors, wecom
from .base import RESERVED_KEYS, Handshake, Scheme, SignedRequest, VerificationError, Verifier
from .request import RequestView, public_url_base, with_query
from .hmacs import verify_github
from .standard import generate_keypair

SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in (
    basic.NONE,
    basic.TOKEN,
    basic.BASIC,
    hmacs.GITHUB,
    generic.HMAC,
    vendors.GITLAB,
    vendors.STRIPE,
    vendors.SHOPIFY,
    vendors.SLACK,
    standard.STANDARD,
    twilio.TWILIO,
    wecom.WECOM,
    feishu.FEISHU,
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


def sign_request(scheme: str, raw: bytes, secret: bytes, now: float,
                 options: Mapping[str, Any] | None = None, *,
                 headers: Mapping[str, str] | None = None, url: str | None = None,
                 method: str = "POST", encrypt: bool = True) -> SignedRequest:
    """Everything a sender using ``scheme`` sends for body ``raw``: headers to add, the body
    (wecom always and feishu by default encrypt it), query parameters the signature adds, and
    ``url`` with them appended. ``headers`` are the request's other headers (Content-Type
    decides twilio's and wecom's form; `{header:Name}` templates read them)."""
    entry = get_scheme(scheme, "sign")
    if entry.sign is None:
        raise ConfigError("sign.scheme", f"scheme {scheme!r} cannot sign requests")
    signed = entry.sign(raw, secret, now, options or {}, headers=headers or {}, url=url,
                        method=method, encrypt=encrypt)
    return dataclasses.replace(signed, url=with_query(url, signed.query) if url else None)


def sign(scheme: str, raw: bytes, secret: bytes, now: float,
         options: Mapping[str, Any] | None = None, *,
         headers: Mapping[str, str] | None = None, url: str | None = None,
         method: str = "POST") -> dict[str, str]:
    """The headers a sender using ``scheme`` adds to ``raw`` (for `fastwebhook send` and tests).

    Only for requests whose body and URL stay as they are; a scheme that must encrypt the body
    or put the signature in the query (wecom, token with `query`, twilio with a JSON body) is
    refused with a pointer to `sign_request`.
    """
    signed = sign_request(scheme, raw, secret, now, options, headers=headers, url=url,
                          method=method, encrypt=False)
    if signed.body is not raw or signed.query:
        raise ConfigError("sign.scheme", f"scheme {scheme!r} changes the body or URL here; "
                                         "use sign_request")
    return signed.headers


__all__ = ["RESERVED_KEYS", "SCHEMES", "Handshake", "RequestView", "Scheme", "SignedRequest",
           "VerificationError", "Verifier", "build_verifier", "generate_keypair", "get_scheme",
           "public_url_base", "sign", "sign_request", "verify_github"]
