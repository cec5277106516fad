"""Feishu (Lark) event callbacks: `X-Lark-Signature`, encrypted bodies, url_verification.

With an Encrypt Key configured Feishu encrypts every body into ``{"encrypt": "<base64>"}`` and
signs events with the hex SHA-256 of timestamp + nonce + encrypt key + body (a plain hash, not
an HMAC). The Verification Token travels inside the (decrypted) body. Feishu's own SDK answers
``url_verification`` after checking only the token, so the handshake does the same (plus the
signature when one is sent); configure `token` to keep strangers from getting an answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers import algorithms

from ..core.errors import ConfigError
from .base import (Handshake, RequestView, Scheme, SignedRequest, Verifier, challenge_answer,
                   check_options, json_object, matches_token, reject, required_header, secret_option,
                   token_digests, wire_bytes)
from .cipher import AES_BLOCK, b64decode_strict, decrypt, encrypt

SIGNATURE = "X-Lark-Signature"
TIMESTAMP = "X-Lark-Request-Timestamp"
NONCE = "X-Lark-Request-Nonce"
_SIGNED_HEADERS = tuple((name.lower(), name) for name in (SIGNATURE, TIMESTAMP, NONCE))
_OPTIONS = frozenset({"encrypt_key", "token"})
# An encrypted url_verification is about 200 bytes (challenge, token, type); events are
# larger, and decrypting each twice (here and in verify) would double their ~10 us cost.
_HANDSHAKE_MAX = 1024


def _feishu_event(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    header = data.get("header")
    value = header.get("event_id") if isinstance(header, dict) else data.get("uuid")  # v2, v1
    return value if isinstance(value, str) and value else None


def _body_token(data: dict) -> Any:
    header = data.get("header")  # v2 events keep it in the header, v1 and handshakes at the top
    return header.get("token") if isinstance(header, dict) else data.get("token")


def _encrypted(raw: bytes) -> str | None:
    """The ``encrypt`` field when the body is Feishu's encrypted envelope."""
    if b'"encrypt"' not in raw:
        return None
    data = json_object(raw)
    value = data.get("encrypt") if data is not None else None
    return value if isinstance(value, str) else None


def _open(key: algorithms.AES, encrypted: str) -> bytes | None:
    data = b64decode_strict(encrypted)
    if data is None or len(data) <= AES_BLOCK:
        return None
    return decrypt(key, data[:AES_BLOCK], data[AES_BLOCK:], AES_BLOCK)


def build_feishu(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, _OPTIONS, "feishu", path)
    option_key = secret_option(options, "encrypt_key", path)
    # The Encrypt Key may be `encrypt_key` or secret(s): secrets get secret_file and rotation.
    keys = tuple(secrets) + ((option_key,) if option_key is not None else ())
    token = secret_option(options, "token", path)
    if not keys and token is None:
        raise ConfigError(path + ".encrypt_key", "scheme 'feishu' needs encrypt_key (or secret), "
                                                 "token, or both")
    ciphers = tuple(algorithms.AES(hashlib.sha256(key).digest()) for key in keys)
    token_digest = token_digests((token,)) if token is not None else None

    def signed_by(raw: bytes, headers: Mapping[str, str]) -> int:
        """Index of the key whose signature the request carries, or raise."""
        given, timestamp, nonce = (required_header(headers, key, name, "feishu", raw)
                                   for key, name in _SIGNED_HEADERS)
        given = given.strip().lower() if given.isascii() else ""
        prefix = wire_bytes(timestamp + nonce)
        for index, key in enumerate(keys):
            expected = hashlib.sha256(prefix + key + raw).hexdigest()
            if hmac.compare_digest(expected, given):
                return index
        raise reject("invalid signature", "feishu", raw, header=SIGNATURE, secrets=len(keys))

    def check_token(raw: bytes, data: dict | None) -> None:
        if token_digest is None:
            return
        given = _body_token(data) if data is not None else None
        if not isinstance(given, str) or not matches_token(
                given.encode("utf-8", "surrogatepass"), token_digest):
            raise reject("invalid verification token", "feishu", raw, field="token")

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        index = signed_by(raw, headers) if keys else None
        plaintext = raw
        encrypted = _encrypted(raw)
        if encrypted is not None:
            if index is None:
                # The sender learns only that the body was refused; our log says why.
                raise reject("undecryptable body", "feishu", raw,
                             reason="no encrypt_key configured")
            plaintext = _open(ciphers[index], encrypted)
            if plaintext is None:
                raise reject("undecryptable body", "feishu", raw, field="encrypt")
        if token_digest is not None:
            check_token(raw, json_object(plaintext))
        return plaintext

    def handshake(raw: bytes, headers: Mapping[str, str], now: float,
                  request: RequestView | None) -> Handshake | None:
        if b"url_verification" in raw:
            plaintext: bytes | None = raw
        elif keys and len(raw) <= _HANDSHAKE_MAX and (encrypted := _encrypted(raw)) is not None:
            # Unsigned, so every key is tried; failures fall through to verify, whose answer
            # does not depend on the decryption, so no padding oracle forms here either.
            plaintext = next((p for p in (_open(c, encrypted) for c in ciphers)
                              if p is not None and b"url_verification" in p), None)
        else:
            return None
        data = json_object(plaintext) if plaintext is not None else None
        if data is None or data.get("type") != "url_verification":
            return None
        if keys and headers.get("x-lark-signature") is not None:
            signed_by(raw, headers)
        check_token(raw, data)
        challenge = data.get("challenge")
        if not isinstance(challenge, str):
            raise reject("url_verification without a challenge", "feishu", raw)
        return challenge_answer(challenge)

    return Verifier(verify, handshake=handshake)


def sign_feishu(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], *,
                encrypt: bool = True, **_: Any) -> SignedRequest:
    """Feishu's request for ``raw``: encrypted into ``{"encrypt": ...}`` (unless ``encrypt`` is
    False), then signed; with no encrypt key, unchanged and unsigned (the token is in the body)."""
    key = secret or secret_option(options, "encrypt_key", "sign")
    if not key:
        return SignedRequest({}, raw, {})
    body = raw
    if encrypt:
        iv = random.token_bytes(AES_BLOCK)
        sealed = encrypt_body(key, iv, raw)
        body = orjson.dumps({"encrypt": base64.b64encode(iv + sealed).decode()})
    timestamp, nonce = str(int(now)), random.token_hex(8)
    signature = hashlib.sha256((timestamp + nonce).encode() + key + body).hexdigest()
    return SignedRequest({TIMESTAMP: timestamp, NONCE: nonce, SIGNATURE: signature}, body, {})


def encrypt_body(key: bytes, iv: bytes, plain: bytes) -> bytes:
    return encrypt(algorithms.AES(hashlib.sha256(key).digest()), iv, plain, AES_BLOCK)


FEISHU = Scheme(name="feishu", factory=build_feishu, needs_secret=False,
                dedup_from_data=_feishu_event, sign=sign_feishu)
