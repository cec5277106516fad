"""Every scheme, table-driven: valid, wrong secret, missing header, expired, rotated secrets,
changed body; then each scheme's own rules, checked against hand-computed signatures."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from verify_support import (FEISHU_BODY, FORM, JSON_BODY, KEY43, NOW, URL, assert_secret_free,
                                 error_text, flip, refused, signed, view)

from fastwebhook.verify import SCHEMES, build_verifier



@dataclasses.dataclass(frozen=True)
class Setup:
    options: dict
    secret: bytes
    other: bytes                      # a different secret of the same kind
    drop: str                         # header (lower-case) or "?query" removed for "missing"
    missing: str                      # the message then
    wrong: str = "invalid signature"
    raw: bytes = JSON_BODY
    headers: dict = dataclasses.field(default_factory=lambda: {"Content-Type": "application/json"})
    timed: bool = False
    covers_body: bool = True          # token-style schemes do not sign the body
    decrypts: bool = False            # verify returns the plaintext, not the raw bytes

    @property
    def scheme(self) -> str:
        return self.id.split("-")[0]


SETUPS = {
    "github": Setup({}, b"gh-secret", b"gh-other", "x-hub-signature-256",
                    "missing signature header X-Hub-Signature-256"),
    "hmac": Setup({"header": "X-Sig", "timestamp_header": "X-Ts"}, b"mac-secret", b"mac-other",
                  "x-sig", "missing signature header X-Sig", timed=True),
    "gitlab": Setup({}, b"gl-token", b"gl-other", "x-gitlab-token",
                    "missing token header X-Gitlab-Token", wrong="invalid token",
                    covers_body=False),
    "stripe": Setup({}, b"whsec_stripe-test", b"whsec_stripe-other", "stripe-signature",
                    "missing signature header Stripe-Signature", timed=True),
    "slack": Setup({}, b"slack-signing", b"slack-other", "x-slack-signature",
                   "missing signature header X-Slack-Signature", timed=True),
    "shopify": Setup({}, b"shpss_secret", b"shpss_other", "x-shopify-hmac-sha256",
                     "missing signature header X-Shopify-Hmac-Sha256"),
    "standard": Setup({}, b"whsec_" + base64.b64encode(b"k" * 24), b"whsec_" +
                      base64.b64encode(b"o" * 24), "webhook-signature",
                      "missing signature header webhook-signature", timed=True),
    "twilio": Setup({}, b"twilio-auth-token", b"twilio-other", "x-twilio-signature",
                    "missing signature header X-Twilio-Signature",
                    raw=b"CallSid=CA1&From=%2B15551234567&Body=hi+there&Body=again", headers=FORM),
    "wecom": Setup({"encoding_aes_key": KEY43, "corpid": "ww1234"}, b"wecom-token",
                   b"wecom-other", "?msg_signature", "missing query parameter msg_signature",
                   raw=b"<xml><Content><![CDATA[hi]]></Content></xml>",
                   headers={"Content-Type": "text/xml"}, decrypts=True),
    "feishu": Setup({"token": "vt-1"}, b"feishu-encrypt-key", b"feishu-other",
                    "x-lark-signature", "missing signature header X-Lark-Signature",
                    raw=FEISHU_BODY, decrypts=True),
    "token-header": Setup({"header": "X-Token", "prefix": "Bearer "}, b"tok-1", b"tok-2",
                          "x-token", "missing token header X-Token", wrong="invalid token",
                          covers_body=False),
    "token-query": Setup({"query": "key"}, b"tok-1", b"tok-2", "?key",
                         "missing query parameter key", wrong="invalid token",
                         covers_body=False),
    "basic": Setup({"username": "hook"}, b"pass-1", b"pass-2", "authorization",
                   "missing header Authorization", wrong="invalid credentials",
                   covers_body=False),
}
for _id, _setup in SETUPS.items():
    object.__setattr__(_setup, "id", _id)


def test_every_scheme_with_a_secret_is_covered():
    assert {setup.scheme for setup in SETUPS.values()} == set(SCHEMES) - {"none"}


def request(setup: Setup, secret: bytes | None = None, now: float = NOW):
    return signed(setup.scheme, setup.raw, secret or setup.secret, setup.options, now=now,
                  headers=setup.headers)


def verifier(setup: Setup, *secrets: bytes):
    return build_verifier(setup.scheme, setup.options, secrets or (setup.secret,), "w")


def accepted(setup: Setup, built, raw, headers, request, now: float = NOW) -> None:
    # Schemes that do not read the request must work without one (the server passes None).
    result = built.verify(raw, headers, now, request if built.needs_request else None)
    if setup.decrypts:
        assert result == setup.raw
    else:
        assert result is raw


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_valid(name):
    setup = SETUPS[name]
    accepted(setup, verifier(setup), *request(setup))


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_wrong_secret(name):
    setup = SETUPS[name]
    raw, headers, view_ = request(setup, setup.other)
    _, good_headers, _ = request(setup)
    error = refused(verifier(setup), raw, headers, NOW, view_)
    assert error.message == setup.wrong
    # Neither secret, nor what a valid signature would have been, reaches the error.
    expected = [value for key, value in good_headers.items() if key not in headers
                or headers[key] != value]
    assert_secret_free(error_text(error), [setup.secret, setup.other], *expected)


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_missing(name):
    setup = SETUPS[name]
    raw, headers, view_ = request(setup)
    if setup.drop.startswith("?"):
        query = {k: v for k, v in view_.query.items() if k != setup.drop[1:]}
        view_ = view(URL.split("?")[0] + "?" + "&".join(f"{k}={v}" for k, v in query.items()),
                     headers)
    else:
        del headers[setup.drop]
    error = refused(verifier(setup), raw, headers, NOW, view_)
    assert error.message == setup.missing
    name_in_detail = setup.drop.lstrip("?")
    assert name_in_detail in error.detail.lower()
    assert_secret_free(error_text(error), [setup.secret])


@pytest.mark.parametrize("name", sorted(name for name, s in SETUPS.items() if s.timed))
@pytest.mark.parametrize("skew, ok", [(0, True), (300, True), (-300, True), (301, False),
                                      (-301, False), (3600, False)])
def test_expired(name, skew, ok):
    setup = SETUPS[name]
    raw, headers, view_ = request(setup)
    built = verifier(setup)
    if ok:
        accepted(setup, built, raw, headers, view_, NOW + skew)
        return
    error = refused(built, raw, headers, NOW + skew, view_)
    assert error.message == "timestamp outside tolerance"
    assert f"skew={skew:+d}s" in error.detail


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_rotated_secrets(name):
    setup = SETUPS[name]
    raw, headers, view_ = request(setup)
    accepted(setup, verifier(setup, setup.other, setup.secret), raw, headers, view_)
    accepted(setup, verifier(setup, setup.secret, setup.other), raw, headers, view_)
    refused(verifier(setup, setup.other), raw, headers, NOW, view_)


@pytest.mark.parametrize("name", sorted(name for name, s in SETUPS.items() if s.covers_body))
@pytest.mark.parametrize("where", [0, 7, -2])
def test_changed_body(name, where):
    setup = SETUPS[name]
    raw, headers, view_ = request(setup)
    if name == "wecom":
        # WeCom signs the <Encrypt> element, not the XML around it: change a byte inside.
        start = raw.index(b"<Encrypt><![CDATA[") + len(b"<Encrypt><![CDATA[")
        where = start + where % 40
    error = refused(verifier(setup), flip(raw, where), headers, NOW, view_)
    assert error.message in ("invalid signature", "missing encrypted payload")


# --- the Verifier's interface ---------------------------------------------------------------

def test_interface_flags_and_dedup_defaults():
    assert {name for name, scheme in SCHEMES.items() if scheme.needs_request} == \
        {"twilio", "wecom"}
    with_handshake = {name for name, setup in SETUPS.items() if verifier(setup).handshake}
    assert with_handshake == {"slack", "wecom", "feishu"}
    assert SCHEMES["slack"].dedup_from_data({"event_id": "Ev7"}) == "Ev7"
    assert SCHEMES["slack"].dedup_from_data("text body") is None
    for name in ("hmac", "wecom", "token", "basic", "none"):
        scheme = SCHEMES[name]
        assert scheme.dedup_key is None and scheme.dedup_from_data is None, name
    built = verifier(SETUPS["github"])
    assert built.dedup_key is SCHEMES["github"].dedup_key and built.scheme == "github"


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_repr_holds_no_secret(name):
    setup = SETUPS[name]
    built = verifier(setup, setup.secret, setup.other)
    text = repr(built) + str(built)
    assert_secret_free(text, [setup.secret, setup.other])
    assert setup.scheme in text
