"""Meta's subscription handshake (`hub.challenge`), which any HMAC-style scheme may answer.

Meta (Facebook, Instagram, WhatsApp) confirms a callback URL with a GET carrying
``hub.mode=subscribe``, ``hub.verify_token`` and ``hub.challenge``, then signs its POSTs with
``X-Hub-Signature-256`` exactly like GitHub; so `github` (or `hmac`, `shopify`, `token`) with a
``verify_token`` option is the Meta scheme.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError
from .base import (Handshake, HandshakeFunction, RequestView, matches_token, need_request, reject,
                   string_option, token_digests)

VERIFY_TOKEN = "verify_token"
_PLAIN = b"text/plain; charset=utf-8"


def meta_handshake(options: Mapping[str, Any], scheme: str, path: str) -> HandshakeFunction | None:
    """The handshake for a ``verify_token`` option, or None when the option is absent."""
    token = string_option(options, VERIFY_TOKEN, path)
    if token is None:
        return None
    if not token:
        raise ConfigError(f"{path}.{VERIFY_TOKEN}", "must not be empty")
    digests = token_digests((token.encode(),))

    def handshake(raw: bytes, headers: Mapping[str, str], now: float,
                  request: RequestView | None) -> Handshake | None:
        request = need_request(request, scheme)
        # The cheap test first: every other request of the workflow is a signed POST.
        if request.method != "GET" or b"hub." not in request.query_string:
            return None
        query = request.query
        if query.get("hub.mode") != "subscribe":
            return None
        given = query.get("hub.verify_token")
        if given is None:
            raise reject("missing query parameter hub.verify_token", scheme, raw,
                         query="hub.verify_token")
        if not matches_token(given.encode("utf-8", "surrogatepass"), digests):
            raise reject("invalid verify token", scheme, raw, query="hub.verify_token")
        challenge = query.get("hub.challenge", "")
        return Handshake(200, challenge.encode("utf-8", "replace"), _PLAIN)

    return handshake
