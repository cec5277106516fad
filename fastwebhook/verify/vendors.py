"""Vendor schemes with one fixed header layout: `gitlab`, `stripe`, `shopify`, `slack`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from .base import (Handshake, RequestView, Scheme, SignedRequest, Verifier, challenge_answer,
                   check_options, check_tolerance, json_object, matches_token, parse_timestamp,
                   read_timestamp, reject, require_secrets, required_header, token_digests,
                   tolerance_option, wire_bytes)
from .hmacs import (MAX_SIGNATURES, any_match, base64_mac, base64_signature, hex_mac, keyed,
                    signature_candidates, strip_padding)
from .meta import VERIFY_TOKEN, meta_handshake

_TOLERANCE = frozenset({"tolerance"})


def _body_string(data: Any, key: str) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


# --- gitlab --------------------------------------------------------------------------------

GITLAB_HEADER = "X-Gitlab-Token"


def _gitlab_delivery(headers: Mapping[str, str]) -> str | None:
    # Idempotency-Key stays the same across GitLab's retries; the event UUID is the fallback.
    return headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid") or None


def build_gitlab(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset(), "gitlab", path)
    require_secrets(secrets, "gitlab", path)
    digests = token_digests(secrets)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = required_header(headers, "x-gitlab-token", GITLAB_HEADER, "gitlab", raw, "token")
        if not matches_token(wire_bytes(value), digests):
            raise reject("invalid token", "gitlab", raw, header=GITLAB_HEADER,
                         secrets=len(digests))
        return raw

    return Verifier(verify, secret_headers=frozenset({"x-gitlab-token"}))


def sign_gitlab(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
                ) -> SignedRequest:
    return SignedRequest({GITLAB_HEADER: secret.decode()}, raw, {})


GITLAB = Scheme(name="gitlab", factory=build_gitlab, dedup_key=_gitlab_delivery, sign=sign_gitlab)


# --- stripe --------------------------------------------------------------------------------

STRIPE_HEADER = "Stripe-Signature"


def _stripe_event(data: Any) -> str | None:
    return _body_string(data, "id")


def build_stripe(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, _TOLERANCE, "stripe", path)
    require_secrets(secrets, "stripe", path)
    # The whole `whsec_...` string is the key, as raw bytes: Stripe does not base64-decode it.
    keys = keyed(secrets, hashlib.sha256)
    tolerance = tolerance_option(options, path)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = required_header(headers, "stripe-signature", STRIPE_HEADER, "stripe", raw)
        timestamps, candidates = [], []
        for item in value.split(",", 2 * MAX_SIGNATURES)[:2 * MAX_SIGNATURES]:
            key, _, text = item.strip().partition("=")
            if key == "t":
                timestamps.append(text)
            elif key == "v1" and text.isascii():  # v0 and unknown schemes are ignored
                candidates.append(text.lower())
        # Exactly one t: with two, which one the MAC covers would be the sender's choice.
        if len(timestamps) != 1:
            raise reject(f"invalid timestamp in header {STRIPE_HEADER}", "stripe", raw,
                         header=STRIPE_HEADER, timestamps=len(timestamps))
        timestamp = parse_timestamp(timestamps[0], STRIPE_HEADER, "stripe", raw)
        # The digits as sent (checked ASCII above): the sender signed its text, not our int.
        pieces = (timestamps[0].strip().encode(), b".", raw)
        if not any_match(keys, pieces, candidates, hex_mac):
            raise reject("invalid signature", "stripe", raw, header=STRIPE_HEADER,
                         signatures=len(candidates), secrets=len(keys))
        check_tolerance(timestamp, now, tolerance, STRIPE_HEADER, "stripe", raw)
        return raw

    return Verifier(verify)


def sign_stripe(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
                ) -> SignedRequest:
    timestamp = str(int(now))
    digest = hmac.new(secret, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return SignedRequest({STRIPE_HEADER: f"t={timestamp},v1={digest}"}, raw, {})


STRIPE = Scheme(name="stripe", factory=build_stripe, dedup_from_data=_stripe_event,
                sign=sign_stripe)


# --- shopify -------------------------------------------------------------------------------

SHOPIFY_HEADER = "X-Shopify-Hmac-Sha256"


def _shopify_delivery(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-shopify-webhook-id") or None


def build_shopify(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, frozenset({VERIFY_TOKEN}), "shopify", path)
    require_secrets(secrets, "shopify", path)
    keys = keyed(secrets, hashlib.sha256)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = required_header(headers, "x-shopify-hmac-sha256", SHOPIFY_HEADER, "shopify", raw)
        candidates = signature_candidates(value, "", strip_padding)
        if not any_match(keys, (raw,), candidates, base64_mac):
            raise reject("invalid signature", "shopify", raw, header=SHOPIFY_HEADER,
                         signatures=len(candidates), secrets=len(keys))
        return raw

    handshake = meta_handshake(options, "shopify", path)
    return Verifier(verify, handshake=handshake, needs_request=handshake is not None)


def sign_shopify(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
                 ) -> SignedRequest:
    mac = hmac.new(secret, raw, hashlib.sha256)
    return SignedRequest({SHOPIFY_HEADER: base64_signature(mac)}, raw, {})


SHOPIFY = Scheme(name="shopify", factory=build_shopify, dedup_key=_shopify_delivery,
                 sign=sign_shopify)


# --- slack ---------------------------------------------------------------------------------

SLACK_HEADER = "X-Slack-Signature"
SLACK_TIMESTAMP = "X-Slack-Request-Timestamp"


def _slack_event(data: Any) -> str | None:
    return _body_string(data, "event_id")


def build_slack(options: Mapping[str, Any], secrets: tuple[bytes, ...], path: str) -> Verifier:
    check_options(options, _TOLERANCE, "slack", path)
    require_secrets(secrets, "slack", path)
    keys = keyed(secrets, hashlib.sha256)
    tolerance = tolerance_option(options, path)

    def verify(raw: bytes, headers: Mapping[str, str], now: float,
               request: RequestView | None) -> bytes:
        value = required_header(headers, "x-slack-signature", SLACK_HEADER, "slack", raw)
        timestamp = read_timestamp(headers, "x-slack-request-timestamp", SLACK_TIMESTAMP,
                                   "slack", raw)
        candidates = signature_candidates(value, "v0=", str.lower)
        # The digits as sent (read_timestamp checked them): the sender signed its text.
        sent = headers["x-slack-request-timestamp"].strip().encode()
        pieces = (b"v0:", sent, b":", raw)
        if not any_match(keys, pieces, candidates, hex_mac):
            raise reject("invalid signature", "slack", raw, header=SLACK_HEADER,
                         signatures=len(candidates), secrets=len(keys))
        check_tolerance(timestamp, now, tolerance, SLACK_TIMESTAMP, "slack", raw)
        return raw

    def handshake(raw: bytes, headers: Mapping[str, str], now: float,
                  request: RequestView | None) -> Handshake | None:
        # A substring test first: ordinary events never parse twice.
        if b"url_verification" not in raw:
            return None
        data = json_object(raw)
        if data is None or data.get("type") != "url_verification":
            return None
        verify(raw, headers, now, request)  # Slack signs its handshake like any request
        challenge = data.get("challenge")
        if not isinstance(challenge, str):
            raise reject("url_verification without a challenge", "slack", raw)
        return challenge_answer(challenge)

    return Verifier(verify, handshake=handshake)


def sign_slack(raw: bytes, secret: bytes, now: float, options: Mapping[str, Any], **_: Any
               ) -> SignedRequest:
    timestamp = str(int(now))
    digest = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256)
    return SignedRequest({SLACK_TIMESTAMP: timestamp, SLACK_HEADER: "v0=" + digest.hexdigest()},
                         raw, {})


SLACK = Scheme(name="slack", factory=build_slack, dedup_from_data=_slack_event, sign=sign_slack)
