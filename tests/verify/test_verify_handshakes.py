"""Provider handshakes, answered without running the workflow: Slack and Feishu
url_verification, Meta's hub.challenge, WeCom's echostr."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from verify_support import (NOW, VECTORS, assert_secret_free, error_text, needs_vectors,
                                 refused, signed, view)

from fastwebhook.verify import Handshake, build_verifier, sign_request

CHALLENGE = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"


# --- slack ---------------------------------------------------------------------------------

SLACK_SECRET = b"slack-signing-secret"
SLACK_HANDSHAKE = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": CHALLENGE,
                              "type": "url_verification"}).encode()


def test_slack_url_verification_is_answered_when_signed():
    built = build_verifier("slack", {}, (SLACK_SECRET,), "w")
    raw, headers, _ = signed("slack", SLACK_HANDSHAKE, SLACK_SECRET, {})
    answer = built.handshake(raw, headers, NOW, None)
    assert answer == Handshake(200, b'{"challenge":"' + CHALLENGE.encode() + b'"}',
                               b"application/json")


@pytest.mark.parametrize("change", ["unsigned", "wrong secret", "expired"])
def test_slack_url_verification_must_be_signed(change):
    built = build_verifier("slack", {}, (SLACK_SECRET,), "w")
    raw, headers, _ = signed("slack", SLACK_HANDSHAKE, b"other" if change == "wrong secret"
                             else SLACK_SECRET, {})
    if change == "unsigned":
        headers = {"content-type": "application/json"}
    now = NOW + 3600 if change == "expired" else NOW
    error = refused(built, raw, headers, now, None)
    assert_secret_free(error_text(error), [SLACK_SECRET])


@pytest.mark.parametrize("body", [
    json.dumps({"type": "event_callback", "event": {"text": "about url_verification"}}).encode(),
    b"payload=url_verification", b"not json url_verification", b"[\"url_verification\"]",
    json.dumps({"type": "event_callback", "event_id": "Ev1"}).encode(),
])
def test_slack_other_requests_are_no_handshake(body):
    built = build_verifier("slack", {}, (SLACK_SECRET,), "w")
    raw, headers, _ = signed("slack", body, SLACK_SECRET, {})
    assert built.handshake(raw, headers, NOW, None) is None
    assert built.verify(raw, headers, NOW, None) is raw


def test_slack_handshake_without_a_challenge_is_refused():
    built = build_verifier("slack", {}, (SLACK_SECRET,), "w")
    raw, headers, _ = signed("slack", b'{"type": "url_verification"}', SLACK_SECRET, {})
    assert refused(built, raw, headers, NOW, None).message == \
        "url_verification without a challenge"


# --- feishu --------------------------------------------------------------------------------

FEISHU_KEY = b"feishu-encrypt-key"
FEISHU_HANDSHAKE = json.dumps({"challenge": CHALLENGE, "token": "vt-1",
                               "type": "url_verification"}).encode()
FEISHU_ANSWER = Handshake(200, b'{"challenge":"' + CHALLENGE.encode() + b'"}',
                          b"application/json")


@pytest.mark.parametrize("options, secrets", [
    ({"token": "vt-1"}, ()), ({}, (FEISHU_KEY,)), ({"token": "vt-1"}, (FEISHU_KEY,)),
])
def test_feishu_plain_url_verification(options, secrets):
    built = build_verifier("feishu", options, secrets, "w")
    headers = {"content-type": "application/json"}
    assert built.handshake(FEISHU_HANDSHAKE, headers, NOW, None) == FEISHU_ANSWER


@pytest.mark.parametrize("token", ["vt-1", None])
def test_feishu_encrypted_url_verification(token):
    options = {"token": token} if token else {}
    built = build_verifier("feishu", options, (b"older-key", FEISHU_KEY), "w")
    out = sign_request("feishu", FEISHU_HANDSHAKE, FEISHU_KEY, NOW, {})
    assert out.body.startswith(b'{"encrypt":"')
    # Feishu does not sign its handshake; with the signature headers kept it passes too.
    assert built.handshake(out.body, {}, NOW, None) == FEISHU_ANSWER
    headers = {k.lower(): v for k, v in out.headers.items()}
    assert built.handshake(out.body, headers, NOW, None) == FEISHU_ANSWER
    forged = {**headers, "x-lark-signature": "0" * 64}
    assert refused(built, out.body, forged, NOW, None).message == "invalid signature"


def test_feishu_handshake_checks_the_token():
    built = build_verifier("feishu", {"token": "vt-2"}, (FEISHU_KEY,), "w")
    error = refused(built, FEISHU_HANDSHAKE, {}, NOW, None)
    assert error.message == "invalid verification token"
    assert_secret_free(error_text(error), [FEISHU_KEY, b"vt-2", b"vt-1"])
    encrypted = sign_request("feishu", FEISHU_HANDSHAKE, FEISHU_KEY, NOW, {}).body
    assert refused(built, encrypted, {}, NOW, None).message == "invalid verification token"


def test_feishu_encrypted_with_another_key_is_no_handshake():
    built = build_verifier("feishu", {}, (FEISHU_KEY,), "w")
    out = sign_request("feishu", FEISHU_HANDSHAKE, b"someone-else", NOW, {})
    assert built.handshake(out.body, {}, NOW, None) is None
    headers = {k.lower(): v for k, v in out.headers.items()}
    assert refused(built, out.body, headers, NOW, None).message == "invalid signature"


def test_feishu_events_are_no_handshake_and_decrypt_in_verify():
    built = build_verifier("feishu", {}, (FEISHU_KEY,), "w")
    event = json.dumps({"schema": "2.0", "header": {"event_id": "e"}, "event": {}}).encode()
    out = sign_request("feishu", event, FEISHU_KEY, NOW, {})
    headers = {k.lower(): v for k, v in out.headers.items()}
    assert built.handshake(out.body, headers, NOW, None) is None
    assert built.verify(out.body, headers, NOW, None) == event


# --- meta (hub.challenge) ------------------------------------------------------------------

def meta_view(method: str = "GET", **query: str):
    return view("https://hooks.example.com/meta?" + urlencode(query), {}, method)


@pytest.mark.parametrize("scheme, options", [
    ("github", {}), ("hmac", {"header": "X-Hub-Signature-256", "prefix": "sha256="}),
    ("shopify", {}), ("token", {"header": "X-Token"}),
])
def test_meta_hub_challenge(scheme, options):
    built = build_verifier(scheme, {**options, "verify_token": "meatyhamhock"}, (b"app",), "w")
    assert built.needs_request
    good = meta_view(**{"hub.mode": "subscribe", "hub.challenge": "1158201444",
                        "hub.verify_token": "meatyhamhock"})
    assert built.handshake(b"", {}, NOW, good) == Handshake(200, b"1158201444",
                                                            b"text/plain; charset=utf-8")
    wrong = meta_view(**{"hub.mode": "subscribe", "hub.challenge": "1",
                         "hub.verify_token": "meatyhamhocks"})
    error = refused(built, b"", {}, NOW, wrong)
    assert error.message == "invalid verify token"
    assert_secret_free(error_text(error), [b"meatyhamhock", b"app"])
    missing = meta_view(**{"hub.mode": "subscribe", "hub.challenge": "1"})
    assert refused(built, b"", {}, NOW, missing).message == \
        "missing query parameter hub.verify_token"
    # Not a handshake: a POST, another mode, no hub.* at all.
    for request in (meta_view("POST", **{"hub.mode": "subscribe", "hub.verify_token": "x"}),
                    meta_view(**{"hub.mode": "unsubscribe"}), meta_view(a="1")):
        assert built.handshake(b"", {}, NOW, request) is None


def test_without_verify_token_there_is_no_meta_handshake():
    built = build_verifier("github", {}, (b"app",), "w")
    assert built.handshake is None and not built.needs_request


# --- wecom (echostr) -----------------------------------------------------------------------

WECOM_OPTIONS = {"encoding_aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
                 "corpid": "wx5823bf96d3bd56c7"}


@needs_vectors
def test_wecom_echostr_vector():
    wecom = VECTORS["wecom"]
    built = build_verifier("wecom", {**WECOM_OPTIONS, "token": wecom["token"]}, (), "w")
    request = view("https://example.com/cb?" + urlencode(wecom["query"]), {}, "GET")
    answer = built.handshake(b"", {}, 0.0, request)
    assert answer == Handshake(200, wecom["echostr_plaintext"].encode(),
                               b"text/plain; charset=utf-8")
    # An echostr whose '+' arrived unescaped (as a space) still verifies.
    raw_query = urlencode(wecom["query"]).replace("%2B", "+")
    assert built.handshake(b"", {}, 0.0, view("https://example.com/cb?" + raw_query, {},
                                              "GET")) == answer


def test_wecom_generated_echostr():
    built = build_verifier("wecom", WECOM_OPTIONS, (b"tok",), "w")
    out = sign_request("wecom", b"echo-12345", b"tok", NOW, WECOM_OPTIONS, method="GET",
                       url="https://example.com/cb")
    request = view(out.url, {}, "GET")
    assert built.handshake(b"", {}, NOW, request).body == b"echo-12345"
    wrong = build_verifier("wecom", WECOM_OPTIONS, (b"other",), "w")
    error = refused(wrong, b"", {}, NOW, request)
    assert error.message == "invalid signature"
    assert_secret_free(error_text(error), [b"tok", b"other", WECOM_OPTIONS["encoding_aes_key"]
                                           .encode()])
    # A POST, or a GET without echostr, is no handshake.
    assert built.handshake(b"", {}, NOW, view(out.url, {}, "POST")) is None
    assert built.handshake(b"", {}, NOW, view("https://example.com/cb?a=echostr", {},
                                              "GET")) is None
