"""Each scheme's own rules, checked against signatures computed by hand (not by our `sign`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from verify_support import FEISHU_BODY, FORM, JSON_BODY, KEY43, NOW, URL, refused, signed, view

from fastwebhook.verify import SCHEMES, build_verifier, generate_keypair, sign

def test_stripe_key_is_the_whole_string_and_any_v1_may_match():
    secret, raw, t = b"whsec_c3RyaXBl", JSON_BODY, int(NOW)
    good = hmac.new(secret, f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    built = build_verifier("stripe", {}, (secret,), "w")
    header = f"t={t},v1={'0' * 64},v1={good},v0={'1' * 64}"
    assert built.verify(raw, {"stripe-signature": header}, NOW, None) is raw
    # Keyed with the base64-decoded part instead (the Standard Webhooks way): refused.
    decoded = hmac.new(base64.b64decode(secret[6:]), f"{t}.".encode() + raw,
                       hashlib.sha256).hexdigest()
    assert refused(built, raw, {"stripe-signature": f"t={t},v1={decoded}"}, NOW, None)
    two = refused(built, raw, {"stripe-signature": f"t={t},t={t},v1={good}"}, NOW, None)
    assert two.message == "invalid timestamp in header Stripe-Signature"
    no_t = refused(built, raw, {"stripe-signature": f"v1={good}"}, NOW, None)
    assert no_t.message == "invalid timestamp in header Stripe-Signature"
    longer = build_verifier("stripe", {"tolerance": "10m"}, (secret,), "w")
    assert longer.verify(raw, {"stripe-signature": f"t={t},v1={good}"}, NOW + 500, None) is raw
    assert SCHEMES["stripe"].dedup_from_data({"id": "evt_9"}) == "evt_9"


def test_shopify_and_gitlab_by_hand():
    secret = b"shopify-secret"
    good = base64.b64encode(hmac.digest(secret, JSON_BODY, "sha256")).decode()
    built = build_verifier("shopify", {}, (secret,), "w")
    assert built.verify(JSON_BODY, {"x-shopify-hmac-sha256": good}, NOW, None) is JSON_BODY
    assert SCHEMES["shopify"].dedup_key({"x-shopify-webhook-id": "w-1"}) == "w-1"
    gitlab = build_verifier("gitlab", {}, (b"gl",), "w")
    assert gitlab.verify(b"", {"x-gitlab-token": "gl"}, NOW, None) == b""
    refused(gitlab, b"", {"x-gitlab-token": "gl "}, NOW, None)
    assert gitlab.secret_headers == {"x-gitlab-token"}
    dedup = SCHEMES["gitlab"].dedup_key
    assert dedup({"idempotency-key": "i", "x-gitlab-event-uuid": "u"}) == "i"
    assert dedup({"x-gitlab-event-uuid": "u"}) == "u" and dedup({}) is None


def test_standard_svix_headers_bare_keys_and_lists():
    key = base64.b64encode(b"s" * 32).decode()
    raw, ts = JSON_BODY, str(int(NOW))
    signature = base64.b64encode(hmac.digest(b"s" * 32, b"msg_1." + ts.encode() + b"." + raw,
                                             "sha256")).decode()
    svix = {"svix-id": "msg_1", "svix-timestamp": ts,
            "svix-signature": f"v1,AAAA v2,xyz v1,{signature}"}
    for secret in (b"whsec_" + key.encode(), key.encode(), b"whsec_" + key.rstrip("=").encode()):
        built = build_verifier("standard", {}, (secret,), "w")
        assert built.verify(raw, svix, NOW, None) is raw
    assert SCHEMES["standard"].dedup_key(svix) == "msg_1"
    missing_id = refused(built, raw, {k: v for k, v in svix.items() if k != "svix-id"}, NOW,
                         None)
    assert missing_id.message == "missing header webhook-id"


def test_standard_v1a_ed25519():
    private, public = generate_keypair()
    assert private.startswith("whsk_") and public.startswith("whpk_")
    headers = sign("standard", JSON_BODY, private.encode(), NOW, {},
                   headers={"webhook-id": "msg_2"})
    assert headers["webhook-signature"].startswith("v1a,")
    headers = {k.lower(): v for k, v in headers.items()}
    hmac_key = b"whsec_" + base64.b64encode(b"h" * 24)
    # A public key alone, or beside an HMAC key during a migration.
    for secrets in ((public.encode(),), (hmac_key, public.encode())):
        built = build_verifier("standard", {}, secrets, "w")
        assert built.verify(JSON_BODY, headers, NOW, None) is JSON_BODY
    _, other_public = generate_keypair()
    other = build_verifier("standard", {}, (other_public.encode(),), "w")
    assert refused(other, JSON_BODY, headers, NOW, None).message == "invalid signature"
    built = build_verifier("standard", {}, (public.encode(),), "w")
    refused(built, JSON_BODY + b" ", headers, NOW, None)
    truncated = {**headers, "webhook-signature": headers["webhook-signature"][:-8]}
    refused(built, JSON_BODY, truncated, NOW, None)
    refused(built, JSON_BODY, headers, NOW + 301, None)


def test_twilio_json_body_is_covered_by_body_sha256():
    raw, headers, view_ = signed("twilio", JSON_BODY, b"tw", {},
                                 headers={"Content-Type": "application/json"})
    assert "bodySHA256=" + hashlib.sha256(JSON_BODY).hexdigest() in view_.url
    built = build_verifier("twilio", {}, (b"tw",), "w")
    assert built.verify(raw, headers, NOW, view_) is raw
    error = refused(built, raw + b" ", headers, NOW, view_)
    assert "reason=body hash" in error.detail
    assert built.needs_request and SCHEMES["twilio"].needs_request
    assert SCHEMES["twilio"].dedup_key({"i-twilio-idempotency-token": "t-1"}) == "t-1"


def test_twilio_repeated_fields_are_sorted_by_value():
    secret, url = b"tw", "https://example.com/sms"
    raw = b"To=%2B1&Media=b&Media=a&From=%2B2"
    text = url + "From+2" + "Mediaa" + "Mediab" + "To+1"
    good = base64.b64encode(hmac.digest(secret, text.encode(), "sha1")).decode()
    headers = {"x-twilio-signature": good, "content-type": FORM["Content-Type"]}
    built = build_verifier("twilio", {}, (secret,), "w")
    assert built.verify(raw, headers, NOW, view(url, headers)) is raw
    # GET: only the URL (with its query) is signed.
    get_url = url + "?From=%2B2&To=%2B1"
    good = base64.b64encode(hmac.digest(secret, get_url.encode(), "sha1")).decode()
    headers = {"x-twilio-signature": good}
    assert built.verify(b"", headers, NOW, view(get_url, headers, "GET")) == b""


def test_wecom_dingtalk_json_body_and_signature_alias():
    options = {"encoding_aes_key": KEY43, "receive_id": "ding123"}
    raw, headers, view_ = signed("wecom", b'{"EventType": "check_url"}', b"ding-token", options,
                                 headers={"Content-Type": "application/json"})
    assert raw.startswith(b'{"encrypt":')
    built = build_verifier("wecom", options, (b"ding-token",), "w")
    assert built.verify(raw, headers, NOW, view_) == b'{"EventType": "check_url"}'
    query = dict(view_.query)
    query["signature"] = query.pop("msg_signature")  # DingTalk's name for it
    aliased = view(URL.split("?")[0] + "?" + "&".join(f"{k}={v}" for k, v in query.items()),
                   headers)
    assert built.verify(raw, headers, NOW, aliased) == b'{"EventType": "check_url"}'
    assert refused(built, b"<xml></xml>", headers, NOW, view_).message == \
        "missing encrypted payload"


def test_feishu_rules():
    key = b"feishu-encrypt-key"
    ts, nonce = str(int(NOW)), "n0nce"
    plain = build_verifier("feishu", {}, (key,), "w")
    by_hand = {"x-lark-request-timestamp": ts, "x-lark-request-nonce": nonce,
               "x-lark-signature": hashlib.sha256((ts + nonce).encode() + key + FEISHU_BODY)
               .hexdigest()}
    assert plain.verify(FEISHU_BODY, by_hand, NOW, None) is FEISHU_BODY
    token_only = build_verifier("feishu", {"token": "vt-1"}, (), "w")
    assert token_only.verify(FEISHU_BODY, {}, NOW, None) is FEISHU_BODY
    wrong = build_verifier("feishu", {"token": "vt-2"}, (), "w")
    assert refused(wrong, FEISHU_BODY, {}, NOW, None).message == "invalid verification token"
    raw, headers, _ = signed("feishu", FEISHU_BODY, key, {})
    error = refused(token_only, raw, headers, NOW, None)
    assert error.message == "undecryptable body" and "no encrypt_key configured" in error.detail
    assert SCHEMES["feishu"].dedup_from_data(json.loads(FEISHU_BODY)) == "e-1"
    assert SCHEMES["feishu"].dedup_from_data({"uuid": "v1-id"}) == "v1-id"


def test_basic_answers_with_a_challenge():
    built = build_verifier("basic", {"username": "hook", "realm": "orders"}, (b"pw",), "w")
    good = "Basic " + base64.b64encode(b"hook:pw").decode()
    assert built.verify(b"x", {"authorization": good}, NOW, None) == b"x"
    for value in (None, "Bearer pw", "Basic !!!", "Basic " + base64.b64encode(b"hook:p").decode(),
                  "Basic " + base64.b64encode(b"hoo:kpw").decode(), "Basic é"):
        headers = {} if value is None else {"authorization": value}
        error = refused(built, b"x", headers, NOW, None)
        assert error.headers == ((b"www-authenticate", b'Basic realm="orders", charset="UTF-8"'),)
    assert built.secret_headers == {"authorization"}


def test_token_places():
    header = build_verifier("token", {"header": "X-Key"}, (b"k1",), "w")
    assert header.verify(b"", {"x-key": "k1"}, NOW, None) == b""
    assert not header.needs_request and header.secret_headers == {"x-key"}
    query = build_verifier("token", {"query": "key"}, (b"k1",), "w")
    assert query.needs_request and query.secret_query == {"key"}
    assert query.verify(b"", {}, NOW, view(URL + "&key=k1", {})) == b""
    refused(query, b"", {}, NOW, view(URL + "&key=k2", {}))
    with pytest.raises(TypeError, match="needs the RequestView"):
        query.verify(b"", {}, NOW, None)
