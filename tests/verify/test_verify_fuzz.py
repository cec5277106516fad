"""Hostile input never raises anything but VerificationError and never draws a secret out; and
every scheme's `sign` round-trips through its own verifier."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verify_support import NOW, assert_secret_free, error_text, signed

from fastwebhook.core.errors import ConfigError
from fastwebhook.verify import (SCHEMES, RequestView, VerificationError, build_verifier,
                                generate_keypair, sign, sign_request)
from fastwebhook.verify.wecom import signature as wecom_signature

SECRET = b"fuzz-secret-value"
KEY43 = base64.b64encode(bytes(range(32))).decode().rstrip("=")
_, PUBLIC = generate_keypair()
STANDARD_KEY = b"whsec_" + base64.b64encode(SECRET)

# One verifier per scheme and notable option set, handshakes included.
BUILT = {
    "none": build_verifier("none", {}, (), "w"),
    "github": build_verifier("github", {"verify_token": "vt"}, (SECRET, b"second"), "w"),
    "hmac": build_verifier("hmac", {"header": "X-Sig", "algorithm": "sha1",
                                    "timestamp_header": "X-Ts", "verify_token": "vt",
                                    "signed": "{header:X-Id}.{timestamp}.{body}"},
                           (SECRET,), "w"),
    "gitlab": build_verifier("gitlab", {}, (SECRET,), "w"),
    "stripe": build_verifier("stripe", {}, (SECRET,), "w"),
    "slack": build_verifier("slack", {}, (SECRET,), "w"),
    "shopify": build_verifier("shopify", {}, (SECRET,), "w"),
    "standard": build_verifier("standard", {}, (STANDARD_KEY, PUBLIC.encode()), "w"),
    "twilio": build_verifier("twilio", {}, (SECRET,), "w"),
    "wecom": build_verifier("wecom", {"encoding_aes_key": KEY43, "corpid": "ww1"}, (SECRET,),
                            "w"),
    "feishu": build_verifier("feishu", {"token": "vt"}, (SECRET,), "w"),
    "feishu-token": build_verifier("feishu", {"token": "vt"}, (), "w"),
    "token": build_verifier("token", {"header": "Authorization", "prefix": "Bearer "},
                            (SECRET,), "w"),
    "token-query": build_verifier("token", {"query": "key", "verify_token": "vt"}, (SECRET,),
                                  "w"),
    "basic": build_verifier("basic", {"username": "u"}, (SECRET,), "w"),
}
LEAKS = [SECRET, b"second", KEY43.encode(), base64.b64decode(KEY43 + "=")]


def test_every_scheme_is_fuzzed():
    assert {name.split("-")[0] for name in BUILT} == set(SCHEMES)


HEADER_NAMES = st.sampled_from([
    "x-hub-signature-256", "x-sig", "x-ts", "x-id", "x-gitlab-token", "stripe-signature",
    "x-slack-signature", "x-slack-request-timestamp", "x-shopify-hmac-sha256", "webhook-id",
    "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp", "svix-signature",
    "x-twilio-signature", "content-type", "x-lark-signature", "x-lark-request-timestamp",
    "x-lark-request-nonce", "authorization", "host"])
HEADER_VALUES = st.one_of(st.text(max_size=120), st.sampled_from([
    "sha256=", "v0=", "v1,", "v1a," + "A" * 86 + "==", "t=1700000000,v1=" + "a" * 64, "t=,v1=,t=",
    "1700000000", "application/x-www-form-urlencoded", "application/json", "Basic dTpw",
    "Basic !!", "Bearer ", "v1,AAAA v1a,AAAA", "0" * 64, "١٧٠٠"]))
QUERY_NAMES = st.sampled_from(["msg_signature", "signature", "timestamp", "nonce", "echostr",
                               "bodySHA256", "key", "hub.mode", "hub.verify_token",
                               "hub.challenge"])
QUERIES = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(QUERY_NAMES, st.one_of(st.text(max_size=80), st.sampled_from(
        ["subscribe", "vt", "AAAA", "a" * 40, base64.b64encode(b"x" * 48).decode()])))
    .map(lambda q: "&".join(f"{k}={v}" for k, v in q.items()).encode("utf-8", "surrogatepass")))
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40)),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
BODIES = st.one_of(
    st.binary(max_size=400),
    st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["url_verification", "event_callback"]) | st.text(max_size=5),
        "challenge": JSON_VALUES, "token": JSON_VALUES, "encrypt": JSON_VALUES,
        "header": JSON_VALUES, "id": JSON_VALUES}).map(lambda d: json.dumps(d).encode()),
    st.text(max_size=200).map(lambda t: f"<xml><Encrypt>{t}</Encrypt></xml>".encode()),
    st.text(max_size=200).map(lambda t: f'{{"encrypt": "{t}"}} url_verification'.encode()),
)
NOWS = st.one_of(st.just(NOW), st.floats(allow_nan=True, allow_infinity=True))


def check_only_verification_errors(call) -> None:
    try:
        call()
    except VerificationError as error:
        assert error.status == 401 and error.message and error.detail
        assert_secret_free(error_text(error), LEAKS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(BUILT)), raw=BODIES,
       headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=8), query=QUERIES,
       method=st.sampled_from(["GET", "POST", "PUT"]), now=NOWS)
def test_arbitrary_requests_only_raise_verification_error(name, raw, headers, query, method,
                                                          now):
    verifier = BUILT[name]
    request = RequestView.build(method, "/w", query, headers, tls=True)
    if verifier.handshake is not None:
        check_only_verification_errors(lambda: verifier.handshake(raw, headers, now, request))
    check_only_verification_errors(lambda: verifier.verify(raw, headers, now, request))


@settings(max_examples=200, deadline=None)
@given(ciphertext=st.binary(max_size=200), nonce=st.text(max_size=12), dingtalk=st.booleans())
def test_signed_garbage_ciphertext_only_raises_verification_error(ciphertext, nonce, dingtalk):
    """Past a valid signature, decryption meets whatever a (compromised) sender encrypted."""
    encrypted = base64.b64encode(ciphertext).decode()
    timestamp = str(int(NOW))
    query = {"msg_signature": wecom_signature(SECRET, timestamp, nonce, encrypted),
             "timestamp": timestamp, "nonce": nonce}
    request = RequestView(method="POST", path="/w", query_string=b"", url="https://h/w",
                          query=query)
    raw = (json.dumps({"encrypt": encrypted}) if dingtalk
           else f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
    check_only_verification_errors(lambda: BUILT["wecom"].verify(raw, {}, NOW, request))
    body = json.dumps({"encrypt": encrypted}).encode()
    lark = {"x-lark-request-timestamp": timestamp, "x-lark-request-nonce": "n",
            "x-lark-signature": hashlib.sha256((timestamp + "n").encode() + SECRET + body)
            .hexdigest()}
    check_only_verification_errors(lambda: BUILT["feishu"].verify(body, lark, NOW, None))
    check_only_verification_errors(lambda: BUILT["feishu"].handshake(body, lark, NOW, None))


# --- sign() round-trips through every registered scheme --------------------------------------

RAW = b'{"event": "order.paid", "id": "evt_42", "header": {"token": "vt"}, "note": "caf\xc3\xa9"}'
SIGN_CASES: dict[str, list[tuple[dict, bytes]]] = {
    "none": [({}, b"")],
    "github": [({}, SECRET)],
    "hmac": [
        ({"header": "X-Sig"}, SECRET),
        ({"header": "X-Sig", "algorithm": "sha512", "encoding": "base64", "prefix": "v1="},
         SECRET),
        ({"header": "X-Sig", "algorithm": "sha1", "timestamp_header": "X-Ts", "tolerance": "1m"},
         SECRET),
        ({"header": "X-Sig", "timestamp_header": "X-Ts",
          "signed": "{header:X-Id}|{timestamp}|{body}"}, SECRET),
    ],
    "gitlab": [({}, SECRET)],
    "stripe": [({}, b"whsec_" + SECRET), ({"tolerance": "10s"}, SECRET)],
    "slack": [({}, SECRET)],
    "shopify": [({}, SECRET)],
    "standard": [({}, STANDARD_KEY), ({}, generate_keypair()[0].encode())],
    "twilio": [({}, SECRET)],
    "wecom": [({"encoding_aes_key": KEY43, "corpid": "ww1"}, SECRET),
              ({"encoding_aes_key": KEY43, "token": "from-options"}, b"")],
    "feishu": [({}, SECRET), ({"token": "vt"}, SECRET), ({"token": "vt"}, b"")],
    "token": [({"header": "X-Token"}, SECRET), ({"query": "key"}, SECRET),
              ({"header": "Authorization", "prefix": "Bearer "}, SECRET)],
    "basic": [({"username": "u"}, SECRET), ({"username": "u", "password": "pw"}, b"")],
}


def test_every_scheme_has_sign_cases():
    assert set(SCHEMES) == set(SIGN_CASES), "add sign round-trip cases for new schemes"


def _verifier_for(scheme: str, options: dict, secret: bytes):
    if scheme == "standard" and secret.startswith(b"whsk_"):
        return None  # verified against the public key in test_verify_schemes
    return build_verifier(scheme, options, (secret,) if secret else (), "w")


@pytest.mark.parametrize("scheme, options, secret", [
    (name, options, secret) for name, cases in SIGN_CASES.items() for options, secret in cases], ids=[
    f"{name}-{n}" for name, cases in SIGN_CASES.items() for n in range(len(cases))])   # (keys made per run)
@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_sign_request_round_trips(scheme, options, secret, content_type):
    raw = RAW if content_type == "application/json" else b"a=1&b=caf%C3%A9&a=0"
    if scheme == "feishu" and options.get("token") and content_type != "application/json":
        pytest.skip("feishu's token lives in a JSON body")
    built = _verifier_for(scheme, options, secret)
    if built is None:
        return
    body, headers, request = signed(scheme, raw, secret, options,
                                    headers={"Content-Type": content_type, "X-Id": "evt_7"})
    result = built.verify(body, headers, NOW + 5, request)
    assert result == raw
    # WeCom signs its <Encrypt> element, not the envelope (tampering: test_verify_schemes).
    if scheme in ("none", "wecom") or (scheme == "feishu" and not secret):
        return
    if scheme in ("gitlab", "token", "basic"):  # they do not sign the body
        headers = {k: v for k, v in headers.items() if k not in built.secret_headers}
        request = RequestView.build("POST", "/w", b"", headers)
    with pytest.raises(VerificationError):
        built.verify(body + b"x", headers, NOW, request)


def test_sign_returns_headers_only_when_nothing_else_changes():
    assert sign("github", RAW, SECRET, NOW) == sign_request("github", RAW, SECRET, NOW).headers
    assert "X-Lark-Signature" in sign("feishu", RAW, SECRET, NOW)  # signed, not encrypted
    for scheme, options in (("wecom", {"encoding_aes_key": KEY43}),
                            ("token", {"query": "key"})):
        with pytest.raises(ConfigError, match="sign_request|always encrypts"):
            sign(scheme, RAW, SECRET, NOW, options)
    with pytest.raises(ConfigError, match="pass the full url"):
        sign("twilio", RAW, SECRET, NOW)
    with pytest.raises(ConfigError, match="unknown verification scheme"):
        sign("nope", RAW, SECRET, NOW)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab=&%+2C3é; "), max_size=40) | st.text(max_size=40))
def test_query_parsing_matches_the_standard_library(text):
    from urllib.parse import parse_qsl

    from fastwebhook.http.messages import parse_query
    assert list(parse_query(text).items()) == parse_qsl(text, keep_blank_values=True)
