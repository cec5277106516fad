"""WeCom (WeChat Work) and DingTalk callbacks: SHA-1 `msg_signature`, AES-CBC payloads.

The URL carries ``msg_signature`` (DingTalk: ``signature``), ``timestamp`` and ``nonce``; the
signature is the hex SHA-1 of the sorted concatenation of token, timestamp, nonce and the
encrypted payload: ``echostr`` on the GET handshake, the ``<Encrypt>`` element of an XML POST,
or ``encrypt`` of a JSON POST (DingTalk). The payload decrypts to 16 random bytes, a 4-byte
big-endian length, the message and the receive id (corp id, suite key or app key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as random
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.ciphers import algorithms

from ..core.errors import ConfigError
from .base import (Handshake, RequestView, Scheme, SignedRequest, Verifier, check_options, json_object,
                   need_request, reject, secret_option, string_option)
from .cipher import b64decode_strict, decrypt, encrypt

_OPTIONS = frozenset({"token", "encoding_aes_key", "corpid", "receive_id"})
_BLOCK = 32  # WeCom pads to 32-byte blocks, not AES's 16
# Every repetition stops at a character base64 never holds, so matching stays linear in the
# body even when an attacker sends megabytes of near-misses.
_ENCRYPT = re.compile(rb"<Encrypt>(?:\s*<!\[CDATA\[([^\]<]*)\]\]>\s*|([^<]*))</Encrypt>")
_PLAIN = b"text/plain; charset=utf-8"


def aes_key(encoding_aes_key: str, where: str) -> bytes:
    key = b64decode_strict(encoding_aes_key + "=")
    if key is None or len(key) != 32:
        raise ConfigError(where, "must be the 43-character EncodingAESKey from the console")
    return key


def _options(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str
             ) -> tuple[tuple[bytes, ...], bytes, bytes | None]:
    check_options(options, _OPTIONS, "wecom", path)
    # The token may come as `token` or as secret(s): secrets get secret_file and rotation.
    token = secret_option(options, "token", path)
    tokens = tuple(secrets) + ((token,) if token is not None else ())
    if not tokens:
        raise ConfigError(path + ".token", "scheme 'wecom' needs token (or secret)")
    text = string_option(options, "encoding_aes_key", path)
    if text is None:
        raise ConfigError(path + ".encoding_aes_key", "scheme 'wecom' needs encoding_aes_key")
    corpid = string_option(options, "corpid", path)
    receive_id = string_option(options, "receive_id", path)
    if corpid is not None and receive_id is not None and corpid != receive_id:
        raise ConfigError(path + ".receive_id", "corpid and receive_id name the same thing; "
                                                "give one")
    expected = corpid if corpid is not None else receive_id
    return tokens, aes_key(text, path + ".encoding_aes_key"), \
        expected.encode() if expected else None


def encrypted_payload(raw: bytes) -> str | None:
    """The encrypted field of a POST body: JSON ``encrypt`` (DingTalk) or XML ``<Encrypt>``.

    A regular expression, not an XML parser: the body is unauthenticated here and an XML
    parser is where entity-expansion attacks live.
    """
    if raw.lstrip()[:1] == b"{":
        data = json_object(raw)
        value = data.get("encrypt") if data is not None else None
        return value if isinstance(value, str) else None
    match = _ENCRYPT.search(raw)
    if match is None:
        return None
    value = match[1] if match[1] is not None else match[2]
    return value.strip().decode("ascii") if value.strip().isascii() else None


def signature(token: bytes, timestamp: str, nonce: str, encrypted: str) -> str:
    parts = sorted([token.decode("utf-8", "surrogatepass"), timestamp, nonce, encrypted])
    return hashlib.sha1("".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def build_wecom(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    tokens, key, receive_id = _options(options, secrets, path)
    cipher_key, iv = algorithms.AES(key), key[:16]

    def check(raw: bytes, query: Mapping[str, str], encrypted: str) -> bytes:
        """The decrypted message, after the signature over ``encrypted`` checks out."""
        given = query.get("msg_signature") or query.get("signature")
        for name, value in (("msg_signature", given), ("timestamp", query.get("timestamp")),
                            ("nonce", query.get("nonce"))):
            if value is None:
                raise reject(f"missing query parameter {name}", "wecom", raw, query=name)
        timestamp, nonce = query["timestamp"], query["nonce"]
        given = given.strip().lower() if given.isascii() else ""
        found = False
        for token in tokens:
            found |= hmac.compare_digest(signature(token, timestamp, nonce, encrypted), given)
        if not found:
            raise reject("invalid signature", "wecom", raw, query="msg_signature",
                         secrets=len(tokens))
        # Signature first, so nothing unauthenticated is ever decrypted (no padding oracle).
        message, sender = _open(cipher_key, iv, encrypted, raw)
        if receive_id is not None and not hmac.compare_digest(sender, receive_id):
            raise reject("invalid receive id", "wecom", raw, receive_id_bytes=len(sender))
        return message

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        query = need_request(request, "wecom").query
        encrypted = encrypted_payload(raw)
        if encrypted is None:
            raise reject("missing encrypted payload", "wecom", raw, field="Encrypt")
        return check(raw, query, encrypted)

    def handshake(raw: bytes, headers: Mapping[str, str], now: float,
                  request: RequestView | None) -> Handshake | None:
        request = need_request(request, "wecom")
        if request.method != "GET" or b"echostr" not in request.query_string:
            return None
        echostr = request.query.get("echostr")
        if echostr is None:
            return None
        # A '+' the sender forgot to percent-encode arrives as ' '; base64 never holds spaces.
        plaintext = check(raw, request.query, echostr.replace(" ", "+"))
        return Handshake(200, plaintext, _PLAIN)

    return Verifier(verify, handshake=handshake, needs_request=True)


def _open(key: algorithms.AES, iv: bytes, encrypted: str, raw: bytes) -> tuple[bytes, bytes]:
    data = b64decode_strict(encrypted)
    plain = decrypt(key, iv, data, _BLOCK) if data else None
    if plain is None or len(plain) < 20:
        raise reject("undecryptable payload", "wecom", raw, field="Encrypt")
    length = int.from_bytes(plain[16:20], "big")
    if length > len(plain) - 20:
        raise reject("undecryptable payload", "wecom", raw, field="Encrypt", length=length)
    return plain[20:20 + length], plain[20 + length:]


def seal(key: bytes, message: bytes, receive_id: bytes) -> str:
    """Encrypt ``message`` the way WeCom does (for `sign` and tests)."""
    plain = random.token_bytes(16) + len(message).to_bytes(4, "big") + message + receive_id
    return base64.b64encode(encrypt(algorithms.AES(key), key[:16], plain, _BLOCK)).decode()


def sign_wecom(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], *,
               headers: Mapping[str, str], method: str = "POST", encrypt: bool = True,
               **_: Any) -> SignedRequest:
    """GET: the echostr handshake for message ``raw``; POST: ``raw`` encrypted into the body
    (XML, or JSON for a JSON Content-Type as DingTalk sends); the signature goes in the query."""
    if not encrypt:
        raise ConfigError("sign.scheme", "wecom always encrypts the body; use sign_request")
    tokens, key, receive_id = _options(options, (secret,) if secret else (), "sign")
    encrypted = seal(key, raw, receive_id or b"")
    timestamp, nonce = str(int(now)), str(random.randbelow(10**10))
    query = {"msg_signature": signature(tokens[0], timestamp, nonce, encrypted),
             "timestamp": timestamp, "nonce": nonce}
    if method.upper() == "GET":
        return SignedRequest({}, b"", {**query, "echostr": encrypted})
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    if "json" in content_type:
        body = b'{"encrypt":"' + encrypted.encode() + b'"}'
    else:
        body = (b"<xml><ToUserName><![CDATA[" + (receive_id or b"") + b"]]></ToUserName>"
                b"<Encrypt><![CDATA[" + encrypted.encode() + b"]]></Encrypt></xml>")
    return SignedRequest({}, body, query)


WECOM = Scheme(name="wecom", factory=build_wecom, needs_secret=False, needs_request=True,
               sign=sign_wecom)
