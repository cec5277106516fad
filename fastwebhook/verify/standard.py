"""Standard Webhooks (and Svix, its origin): `v1` HMAC-SHA256 and `v1a` ed25519 signatures.

Secrets: ``whsec_<base64>`` (or the bare base64) is an HMAC key, ``whpk_<base64>`` an ed25519
public key; one workflow may hold both kinds during a migration, and several of each (rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..core.errors import ConfigError
from .base import (RequestView, Scheme, SignedRequest, Verifier, check_options, check_tolerance,
                   missing_header, parse_timestamp, reject, require_secrets, tolerance_option,
                   wire_bytes)
from .hmacs import MAX_SIGNATURES, any_match, base64_mac, keyed

SIGNATURE = "webhook-signature"
_HEADERS = {name: (f"webhook-{name}", f"svix-{name}") for name in ("id", "timestamp", "signature")}
_ED25519_SIGNATURE_SIZE = 64


def _lookup(headers: Mapping[str, str], name: str, raw: bytes, kind: str | None) -> tuple[str, str]:
    """A header's value and the name it came under (webhook-* first, then Svix's svix-*), or
    a refusal naming the webhook-* one."""
    for key in _HEADERS[name]:
        value = headers.get(key)
        if value is not None:
            return value, key
    raise missing_header(_HEADERS[name][0], "standard", raw, kind)


def _standard_delivery(headers: Mapping[str, str]) -> str | None:
    return headers.get("webhook-id") or headers.get("svix-id") or None


def _b64decode(text: str) -> bytes:
    # Some dashboards show keys without padding; restoring it is harmless.
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_secrets(secrets: tuple[bytes, ...], path: str
                  ) -> tuple[tuple[bytes, ...], tuple[Ed25519PublicKey, ...]]:
    """Split the secrets into HMAC keys and ed25519 public keys (ConfigError for bad ones)."""
    hmac_keys, public_keys = [], []
    for index, secret in enumerate(secrets):
        where = path + (f".secrets[{index}]" if len(secrets) > 1 else ".secret")
        text = secret.decode("utf-8", "replace")
        if text.startswith("whsk_"):
            raise ConfigError(where, "a whsk_ key signs; give the receiver its whpk_ public key")
        try:
            if text.startswith("whpk_"):
                public_keys.append(Ed25519PublicKey.from_public_bytes(_b64decode(text[5:])))
            else:
                key = _b64decode(text.removeprefix("whsec_"))
                if not key:
                    raise ValueError("empty key")
                hmac_keys.append(key)
        except (binascii.Error, ValueError):
            # Never echo the text: it is the secret.
            raise ConfigError(where, "not a Standard Webhooks key (whsec_<base64> or "
                                     "whpk_<base64 of a 32-byte ed25519 public key>)") from None
    return tuple(hmac_keys), tuple(public_keys)


def build_standard(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset({"tolerance"}), "standard", path)
    require_secrets(secrets, "standard", path)
    hmac_keys, public_keys = parse_secrets(secrets, path)
    keys = keyed(hmac_keys, hashlib.sha256)
    tolerance = tolerance_option(options, path)
    key_count = len(keys) + len(public_keys)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value, signature_header = _lookup(headers, "signature", raw, "signature")
        message_id, _ = _lookup(headers, "id", raw, None)
        sent, timestamp_header = _lookup(headers, "timestamp", raw, "timestamp")
        timestamp = parse_timestamp(sent, timestamp_header, "standard", raw)
        pieces = (wire_bytes(message_id), b".", sent.strip().encode(), b".", raw)
        symmetric, asymmetric = [], []
        for token in value.split(None, MAX_SIGNATURES)[:MAX_SIGNATURES]:
            version, _, signature = token.partition(",")
            if version == "v1" and signature.isascii():
                symmetric.append(signature.rstrip("="))
            elif version == "v1a" and public_keys:
                asymmetric.append(signature)
        if not (any_match(keys, pieces, symmetric, base64_mac)
                or _any_ed25519(public_keys, b"".join(pieces), asymmetric)):
            raise reject("invalid signature", "standard", raw, header=signature_header,
                         signatures=len(symmetric) + len(asymmetric), secrets=key_count)
        check_tolerance(timestamp, now, tolerance, timestamp_header, "standard", raw)
        return raw

    return Verifier(verify)


def _any_ed25519(public_keys: tuple[Ed25519PublicKey, ...], message: bytes,
                 encoded: list[str]) -> bool:
    # A public-key check compares nothing secret, so its timing needs no constant-time care.
    for text in encoded:
        try:
            signature = _b64decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            continue
        for key in public_keys:
            try:
                key.verify(signature, message)
                return True
            except InvalidSignature:
                pass
    return False


def generate_keypair() -> tuple[str, str]:
    """A fresh (``whsk_`` signing key, ``whpk_`` public key) pair, for tests and senders."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    return ("whsk_" + base64.b64encode(seed).decode(), "whpk_" + base64.b64encode(public).decode())


def sign_standard(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], *,
                  headers: Mapping[str, str], **_: Any) -> SignedRequest:
    """``v1`` with a whsec_ key, ``v1a`` with a whsk_ key; the id comes from ``headers``, else
    a new one."""
    given = {name.lower(): value for name, value in headers.items()}
    message_id = given.get("webhook-id") or given.get("svix-id") or "msg_" + random.token_hex(12)
    timestamp = str(int(now))
    message = message_id.encode() + b"." + timestamp.encode() + b"." + raw
    text = secret.decode()
    try:
        if text.startswith("whsk_"):
            private = Ed25519PrivateKey.from_private_bytes(_b64decode(text[5:])[:32])
            signature = "v1a," + base64.b64encode(private.sign(message)).decode()
        else:
            key = _b64decode(text.removeprefix("whsec_"))
            signature = "v1," + base64.b64encode(hmac.digest(key, message, "sha256")).decode()
    except (binascii.Error, ValueError):
        raise ConfigError("sign.secret", "not a whsec_ or whsk_ key") from None
    return SignedRequest({"webhook-id": message_id, "webhook-timestamp": timestamp,
                          SIGNATURE: signature}, raw, {})


STANDARD = Scheme(name="standard", factory=build_standard, dedup_key=_standard_delivery,
                  sign=sign_standard)
