"""Every published vector in signatures.json verifies through the registry, and stops verifying
when one byte of its body, signature, timestamp or secret changes."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import pytest
from verify_support import (VECTORS, assert_secret_free, attempt, change_char, error_text,
                                 flip, lower, needs_vectors, refused, view)

from fastwebhook.verify import Handshake, build_verifier, sign

HEX = "0123456789abcdef"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@dataclasses.dataclass(frozen=True)
class Vector:
    """One published request: enough to rebuild it, and to rebuild it with one part changed."""

    scheme: str
    secret: bytes
    options: dict
    raw: bytes
    headers: dict[str, str]
    now: float = 0.0
    url: str | None = None
    method: str = "POST"
    expected: bytes | None = None  # what verify (or the handshake) hands on; None = raw itself
    secrets: Callable[[bytes], tuple[bytes, ...]] = lambda secret: (secret,)

    def run(self):
        verifier = build_verifier(self.scheme, self.options, self.secrets(self.secret), "w")
        request = view(self.url, self.headers, self.method) if self.url else None
        return verifier, request, attempt(verifier, self.raw, self.headers, self.now, request)


def _vectors() -> dict[str, Vector]:
    if not VECTORS:
        return {}
    github, slack, standard = VECTORS["github"], VECTORS["slack"], VECTORS["standard"]
    twilio, wecom = VECTORS["twilio"], VECTORS["wecom"]
    return {
        "github": Vector("github", github["secret"].encode(), {}, github["body"].encode(),
                         lower(github["headers"])),
        "slack": Vector("slack", slack["secret"].encode(), {}, slack["body"].encode(),
                        lower(slack["headers"]), now=1531420618.0),
        "standard": Vector("standard", standard["secret"].encode(), {},
                           standard["body"].encode(), lower(standard["headers"]),
                           now=1614265330.0),
        "twilio": Vector("twilio", twilio["secret"].encode(), {},
                         urlencode(twilio["form"]).encode(),
                         {**lower(twilio["headers"]),
                          "content-type": "application/x-www-form-urlencoded"},
                         url=twilio["url"]),
        # The GET echostr handshake: answered with the decrypted echostr.
        "wecom": Vector("wecom", wecom["token"].encode(),
                        {"encoding_aes_key": wecom["encoding_aes_key"],
                         "corpid": wecom["corpid"]}, b"", {},
                        url="https://example.com/wecom?" + urlencode(wecom["query"]),
                        method="GET", expected=wecom["echostr_plaintext"].encode()),
    }


VECTOR_CASES = _vectors()


@needs_vectors
@pytest.mark.parametrize("name", sorted(VECTOR_CASES))
def test_published_vector_verifies(name):
    vector = VECTOR_CASES[name]
    verifier, _, result = vector.run()
    if isinstance(result, Handshake):
        assert (result.status, result.body) == (200, vector.expected)
    else:
        assert result is vector.raw  # the very bytes, not a copy


def _with_query(vector: Vector, name: str, change: Callable[[str], str]) -> Vector:
    parts = urlsplit(vector.url)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&"))
    query[name] = change(query[name])
    return dataclasses.replace(vector, url=parts._replace(query="&".join(
        f"{k}={v}" for k, v in query.items())).geturl())


def _with_header(vector: Vector, name: str, change: Callable[[str], str]) -> Vector:
    return dataclasses.replace(vector, headers={**vector.headers, name: change(
        vector.headers[name])})


def _signature_digit(prefix: str, alphabet: str, where: int) -> Callable[[str], str]:
    return lambda value: prefix + change_char(value[len(prefix):], where, alphabet)


def _timestamp_digit(value: str) -> str:
    # One second later: inside the tolerance, so only the signature can object.
    return str(int(value) + 1)


# vector -> part -> (the vector with that part changed) for one position `where`.
CHANGES: dict[str, dict[str, Callable[[Vector, int], Vector]]] = {
    "github": {
        "signature": lambda v, i: _with_header(v, "x-hub-signature-256",
                                               _signature_digit("sha256=", HEX, i)),
    },
    "slack": {
        "signature": lambda v, i: _with_header(v, "x-slack-signature",
                                               _signature_digit("v0=", HEX, i)),
        "timestamp": lambda v, i: _with_header(v, "x-slack-request-timestamp",
                                               _timestamp_digit),
    },
    "standard": {
        "signature": lambda v, i: _with_header(v, "webhook-signature",
                                               _signature_digit("v1,", B64, i % 40)),
        "timestamp": lambda v, i: _with_header(v, "webhook-timestamp", _timestamp_digit),
        # A changed key, not a broken `whsec_` prefix (that is a config error at load).
        "secret": lambda v, i: dataclasses.replace(v, secret=b"whsec_" + change_char(
            v.secret.decode()[6:], i, B64).encode()),
    },
    "twilio": {
        "signature": lambda v, i: _with_header(v, "x-twilio-signature",
                                               _signature_digit("", B64, i % 26)),
        "url": lambda v, i: dataclasses.replace(v, url=v.url.replace("foo=1", "foo=2")),
    },
    "wecom": {
        "body": lambda v, i: _with_query(v, "echostr", lambda s: change_char(s, i % 80, B64)),
        "signature": lambda v, i: _with_query(v, "msg_signature",
                                              lambda s: change_char(s, i, HEX)),
        "timestamp": lambda v, i: _with_query(v, "timestamp", _timestamp_digit),
    },
}
for _name, _parts in CHANGES.items():
    _parts.setdefault("secret", lambda v, i: dataclasses.replace(v, secret=flip(v.secret, i)))
    _parts.setdefault("body", lambda v, i: dataclasses.replace(v, raw=flip(v.raw, i)))


@needs_vectors
@pytest.mark.parametrize("name, part", [(name, part) for name in sorted(CHANGES)
                                        for part in sorted(CHANGES[name])])
@pytest.mark.parametrize("where", [0, 5, -1])
def test_one_changed_byte_is_refused(name, part, where):
    original = VECTOR_CASES[name]
    changed = CHANGES[name][part](original, where)
    assert changed != original
    verifier = build_verifier(changed.scheme, changed.options, (changed.secret,), "w")
    request = view(changed.url, changed.headers, changed.method) if changed.url else None
    error = refused(verifier, changed.raw, changed.headers, changed.now, request)
    assert error.message == "invalid signature"
    # Neither key can be read from what the sender or our log learns.
    assert_secret_free(error_text(error), [original.secret, changed.secret])


@needs_vectors
@pytest.mark.parametrize("name", ["slack", "standard"])
def test_timed_vectors_expire(name):
    vector = VECTOR_CASES[name]
    verifier = build_verifier(vector.scheme, {}, (vector.secret,), "w")
    for skew in (301, -301, 86400 * 365):
        error = refused(verifier, vector.raw, vector.headers, vector.now + skew, None)
        assert error.message == "timestamp outside tolerance"
        assert f"skew={skew:+d}s" in error.detail


@needs_vectors
def test_signing_reproduces_the_deterministic_vectors():
    for name in ("github", "slack", "standard"):
        vector = VECTOR_CASES[name]
        headers = sign(name, vector.raw, vector.secret, vector.now, {}, headers=vector.headers)
        assert lower(headers).items() <= vector.headers.items(), name
    twilio = VECTOR_CASES["twilio"]
    headers = sign("twilio", twilio.raw, twilio.secret, 0.0, {}, url=twilio.url,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert headers == VECTORS["twilio"]["headers"]


@needs_vectors
@pytest.mark.parametrize("host", ["mycompany.com:443", "mycompany.com"])
def test_twilio_vector_with_and_without_the_default_port(host):
    twilio = VECTOR_CASES["twilio"]
    verifier = build_verifier("twilio", {}, (twilio.secret,), "w")
    url = "https://" + host + "/myapp.php?foo=1&bar=2"
    assert verifier.verify(twilio.raw, twilio.headers, 0.0, view(url, twilio.headers)) \
        is twilio.raw
    # A port the sender did not use is a different URL.
    other = view("https://mycompany.com:8443/myapp.php?foo=1&bar=2", twilio.headers)
    assert refused(verifier, twilio.raw, twilio.headers, 0.0, other).message == \
        "invalid signature"


@needs_vectors
def test_twilio_vector_behind_a_proxy_uses_public_url():
    from fastwebhook.verify import RequestView, public_url_base
    twilio = VECTOR_CASES["twilio"]
    verifier = build_verifier("twilio", {}, (twilio.secret,), "w")
    # The proxy spoke plain HTTP to us under another Host name.
    headers = {**twilio.headers, "host": "10.0.0.7:8080"}
    plain = RequestView.build("POST", "/myapp.php", b"foo=1&bar=2", headers)
    assert plain.url == "http://10.0.0.7:8080/myapp.php?foo=1&bar=2"
    refused(verifier, twilio.raw, headers, 0.0, plain)
    base = public_url_base("https://mycompany.com/ignored/path")
    public = RequestView.build("POST", "/myapp.php", b"foo=1&bar=2", headers, base)
    assert verifier.verify(twilio.raw, headers, 0.0, public) is twilio.raw


@needs_vectors
def test_wecom_vector_msg_signature_and_receive_id():
    vector = VECTOR_CASES["wecom"]
    # The same payload POSTed in XML verifies and decrypts to the message.
    query = dict(VECTORS["wecom"]["query"])
    echostr = query.pop("echostr")
    xml = f"<xml><Encrypt><![CDATA[{echostr}]]></Encrypt></xml>".encode()
    post = view("https://example.com/wecom?" + urlencode(query), {})
    verifier = build_verifier("wecom", vector.options, (vector.secret,), "w")
    assert verifier.verify(xml, {}, 0.0, post) == vector.expected
    wrong_corp = build_verifier("wecom", {**vector.options, "corpid": "wx0000000000000000"},
                                (vector.secret,), "w")
    assert refused(wrong_corp, xml, {}, 0.0, post).message == "invalid receive id"
    # A wrong AES key: the signature holds, the plaintext does not.
    other_key = base64.b64encode(bytes(range(32))).decode().rstrip("=")
    wrong_key = build_verifier("wecom", {**vector.options, "encoding_aes_key": other_key},
                               (vector.secret,), "w")
    assert refused(wrong_key, xml, {}, 0.0, post).message in (
        "undecryptable payload", "invalid receive id")
