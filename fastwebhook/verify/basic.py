"""Schemes that compare a shared secret as sent: `token`, HTTP `basic`, and `none`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError
from .base import (RequestView, Scheme, SignedRequest, VerificationError, Verifier, check_options,
                   matches_token, need_request, reject, require_secrets, required_header, secret_option,
                   string_option, token_digests, wire_bytes)
from .meta import VERIFY_TOKEN, meta_handshake

# --- none ----------------------------------------------------------------------------------


def _accept(raw: bytes, headers: Mapping[str, str], now: float,
            request: RequestView | None) -> bytes:
    return raw


def build_none(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset(), "none", path)
    if secrets:
        # A secret here means the author believes the hook is verified; it would not be.
        raise ConfigError(path + ".secret",
                          "scheme 'none' checks nothing; remove the secret or choose a scheme")
    return Verifier(_accept)


def sign_none(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
              ) -> SignedRequest:
    return SignedRequest({}, raw, {})


NONE = Scheme(name="none", factory=build_none, needs_secret=False, sign=sign_none)


# --- token ---------------------------------------------------------------------------------

_TOKEN_OPTIONS = frozenset({"header", "query", "prefix", VERIFY_TOKEN})


def _token_place(options: Mapping[str, Any], path: str) -> tuple[str | None, str | None, str]:
    check_options(options, _TOKEN_OPTIONS, "token", path)
    header = string_option(options, "header", path)
    query = string_option(options, "query", path)
    if (header is None) == (query is None):
        raise ConfigError(path + ".header", "scheme 'token' needs exactly one of header or query")
    if (header or query or "").strip() == "":
        raise ConfigError(path + (".header" if header is not None else ".query"),
                          "must not be empty")
    prefix = string_option(options, "prefix", path, "")
    if prefix and query is not None:
        raise ConfigError(path + ".prefix", "a prefix applies to a header token only")
    return (header.strip() if header else None), (query.strip() if query else None), prefix


def build_token(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    header, query, prefix = _token_place(options, path)
    require_secrets(secrets, "token", path)
    digests = token_digests(secrets)
    handshake = meta_handshake(options, "token", path)

    if header is not None:
        key = header.lower()

        def verify(raw: bytes, headers: Mapping[str, str], now: float,
                   request: RequestView | None) -> bytes:
            value = required_header(headers, key, header, "token", raw, "token").strip()
            # The prefix ("Bearer ") is public, so testing it need not be constant-time.
            if not value.startswith(prefix) or \
                    not matches_token(wire_bytes(value[len(prefix):]), digests):
                raise reject("invalid token", "token", raw, header=header, secrets=len(digests))
            return raw

        return Verifier(verify, handshake=handshake, needs_request=handshake is not None,
                        secret_headers=frozenset({key}))

    def verify_query(raw: bytes, headers: Mapping[str, str], now: float,
                     request: RequestView | None) -> bytes:
        value = need_request(request, "token").query.get(query)
        if value is None:
            raise reject(f"missing query parameter {query}", "token", raw, query=query)
        if not matches_token(value.encode("utf-8", "surrogatepass"), digests):
            raise reject("invalid token", "token", raw, query=query, secrets=len(digests))
        return raw

    return Verifier(verify_query, handshake=handshake, needs_request=True,
                    secret_query=frozenset({query}))


def sign_token(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
               ) -> SignedRequest:
    header, query, prefix = _token_place(options, "sign")
    if header is not None:
        return SignedRequest({header: prefix + secret.decode()}, raw, {})
    return SignedRequest({}, raw, {query: secret.decode()})


TOKEN = Scheme(name="token", factory=build_token, sign=sign_token)


# --- basic ---------------------------------------------------------------------------------

_BASIC_OPTIONS = frozenset({"username", "password", "realm"})


def _credentials(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str
                 ) -> tuple[str, tuple[bytes, ...], str]:
    check_options(options, _BASIC_OPTIONS, "basic", path)
    username = string_option(options, "username", path)
    if not username or ":" in username:
        raise ConfigError(path + ".username", "scheme 'basic' needs a username without ':'")
    # The password may be `password` or secret(s): secrets get secret_file and rotation.
    password = secret_option(options, "password", path)
    passwords = tuple(secrets) + ((password,) if password is not None else ())
    if not passwords:
        raise ConfigError(path + ".password", "scheme 'basic' needs password (or secret)")
    realm = string_option(options, "realm", path, "fastwebhook")
    if not realm.isprintable() or not realm.isascii() or '"' in realm or "\\" in realm:
        raise ConfigError(path + ".realm", "must be printable ASCII without quotes")
    return username, passwords, realm


def build_basic(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    username, passwords, realm = _credentials(options, secrets, path)
    # user:password compared as one digest, so neither half's length or match shows in timing.
    digests = token_digests(tuple(username.encode() + b":" + password for password in passwords))
    challenge = ((b"www-authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode()),)

    def refuse(message: str, raw: bytes) -> VerificationError:
        error = reject(message, "basic", raw, header="Authorization")
        error.headers = challenge
        return error

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = headers.get("authorization")
        if value is None:
            raise refuse("missing header Authorization", raw)
        kind, _, encoded = value.strip().partition(" ")
        if kind.lower() != "basic":
            raise refuse("invalid credentials", raw)
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise refuse("invalid credentials", raw) from None
        if not matches_token(given, digests):
            raise refuse("invalid credentials", raw)
        return raw

    return Verifier(verify, secret_headers=frozenset({"authorization"}))


def sign_basic(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
               ) -> SignedRequest:
    username, passwords, _ = _credentials(options, (secret,) if secret else (), "sign")
    encoded = base64.b64encode(username.encode() + b":" + passwords[0]).decode()
    return SignedRequest({"Authorization": "Basic " + encoded}, raw, {})


BASIC = Scheme(name="basic", factory=build_basic, needs_secret=False, sign=sign_basic)
