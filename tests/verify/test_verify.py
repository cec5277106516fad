"""`github` and the generic `hmac` scheme as pure functions.

Published vectors: test_verify_vectors.py; the other schemes: test_verify_schemes.py and
test_verify_rules.py; handshakes: test_verify_handshakes.py; config errors:
test_verify_config.py; sign round trips and hostile input: test_verify_fuzz.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from verify_support import VECTORS, lower, needs_vectors

from fastwebhook.core.errors import RequestError
from fastwebhook.verify import SCHEMES, VerificationError, build_verifier, sign, verify_github


def rejection(verifier, raw, headers, now=0.0) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        assert verifier.verify(raw, lower(headers), now, None) is raw
    return caught.value


def assert_no_leak(error: VerificationError, secrets, raw: bytes, algorithm="sha256") -> None:
    """Neither the secret nor the MAC we expected (in any usual encoding) reaches message/detail."""
    text = " ".join([str(error), error.message, error.detail or ""])
    for secret in secrets:
        assert secret.decode(errors="replace") not in text
        digest = hmac.new(secret, raw, algorithm).digest()
        for encoded in (digest.hex(), base64.b64encode(digest).decode().rstrip("=")):
            assert encoded not in text


# --- github, the published vector -----------------------------------------------------------

@pytest.fixture
def github():
    if not VECTORS:
        pytest.skip("signatures.json not found")
    vector = VECTORS["github"]
    return vector["body"].encode(), lower(vector["headers"]), vector["secret"].encode()


@needs_vectors
def test_github_vector_verifies(github):
    raw, headers, secret = github
    verify_github(raw, headers, (secret,), 0.0)
    build_verifier("github", {}, (secret,), "workflows.gh.verify").verify(raw, headers, 0.0, None)
    assert sign("github", raw, secret, 0.0) == VECTORS["github"]["headers"]


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@needs_vectors
@pytest.mark.parametrize("part", ["body", "signature", "secret"])
@pytest.mark.parametrize("where", [0, 5, -1])
def test_github_rejects_one_changed_byte(github, part, where):
    raw, headers, secret = github
    if part == "body":
        raw = _flip(raw, where % len(raw))
    elif part == "secret":
        secret = _flip(secret, where % len(secret))
    else:
        value = headers["x-hub-signature-256"]
        index = len("sha256=") + where % (len(value) - len("sha256="))
        headers = {**headers, "x-hub-signature-256":
                   value[:index] + ("0" if value[index] != "0" else "1") + value[index + 1:]}
    error = rejection(build_verifier("github", {}, (secret,), "w"), raw, headers)
    assert (error.status, error.reason, error.message) == (401, "signature", "invalid signature")
    assert isinstance(error, RequestError)
    assert "X-Hub-Signature-256" in error.detail
    assert hashlib.sha256(raw).hexdigest() in error.detail
    assert_no_leak(error, [secret], raw)


@needs_vectors
def test_github_missing_header(github):
    raw, _, secret = github
    error = rejection(build_verifier("github", {}, (secret,), "w"), raw, {"x-other": "1"})
    assert error.message == "missing signature header X-Hub-Signature-256"
    assert "header=X-Hub-Signature-256" in error.detail
    assert_no_leak(error, [secret], raw)


@needs_vectors
def test_github_rotated_secrets(github):
    raw, headers, secret = github
    build_verifier("github", {}, (b"the-old-one", secret), "w").verify(raw, headers, 0.0, None)
    build_verifier("github", {}, (secret, b"the-new-one"), "w").verify(raw, headers, 0.0, None)
    error = rejection(build_verifier("github", {}, (b"old", b"new"), "w"), raw, headers)
    assert "secrets=2" in error.detail
    assert_no_leak(error, [b"old", b"new"], raw)


@needs_vectors
@pytest.mark.parametrize("value", [
    "sha256=0000,sha256={good}", "sha256=0000 sha256={good}", "sha256={GOOD}",
    " sha256={good} ", "{good}",
])
def test_github_accepts_a_listed_or_upper_case_signature(github, value):
    raw, headers, secret = github
    good = headers["x-hub-signature-256"].removeprefix("sha256=")
    value = value.format(good=good, GOOD=good.upper())
    built = build_verifier("github", {}, (secret,), "w")
    assert built.verify(raw, {"x-hub-signature-256": value}, 0.0, None) is raw


@pytest.mark.parametrize("value", ["", "sha256=", "sha256=é" + "0" * 63, "sha1=abc", ",,, ,"])
def test_github_rejects_malformed_headers(value):
    error = rejection(build_verifier("github", {}, (b"s",), "w"), b"{}",
                      {"X-Hub-Signature-256": value})
    assert error.message == "invalid signature"


def test_dedup_keys():
    assert SCHEMES["github"].dedup_key({"x-github-delivery": "72d3162e"}) == "72d3162e"
    assert SCHEMES["github"].dedup_key({}) is None
    assert SCHEMES["none"].dedup_key is None and SCHEMES["hmac"].dedup_key is None


def test_none_accepts_everything():
    build_verifier("none", {}, (), "w").verify(b"\xff anything", {}, float("nan"), None)
    assert not SCHEMES["none"].needs_secret and SCHEMES["github"].needs_secret


# --- generic hmac ---------------------------------------------------------------------------

RAW = b'{"event": "order.paid", "id": 42, "note": "caf\xc3\xa9"}'
SECRET = b"generic-secret"
NOW = 1_700_000_000.0


def _encoded(algorithm: str, encoding: str, message: bytes, secret: bytes = SECRET) -> str:
    digest = hmac.new(secret, message, algorithm).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("prefix", ["", "sha256=", "v1,"])
def test_hmac_algorithms_encodings_prefixes(algorithm, encoding, prefix):
    options = {"header": "X-Signature", "algorithm": algorithm, "encoding": encoding,
               "prefix": prefix}
    verifier = build_verifier("hmac", options, (SECRET,), "w")
    good = prefix + _encoded(algorithm, encoding, RAW)
    verifier.verify(RAW, {"x-signature": good}, NOW, None)
    # several: any may match
    verifier.verify(RAW, {"x-signature": prefix + "AAAA," + good}, NOW, None)
    error = rejection(verifier, RAW + b" ", {"X-Signature": good})
    assert error.message == "invalid signature"
    assert_no_leak(error, [SECRET], RAW + b" ", algorithm)
    wrong = prefix + _encoded(algorithm, encoding, RAW, b"other-secret")
    assert rejection(verifier, RAW, {"X-Signature": wrong}).message == "invalid signature"


def test_hmac_base64_without_padding_and_hex_upper_case():
    b64 = build_verifier("hmac", {"header": "X-S", "encoding": "base64"}, (SECRET,), "w")
    b64.verify(RAW, {"x-s": _encoded("sha256", "base64", RAW).rstrip("=")}, NOW, None)
    hexed = build_verifier("hmac", {"header": "X-S"}, (SECRET,), "w")
    hexed.verify(RAW, {"x-s": _encoded("sha256", "hex", RAW).upper()}, NOW, None)


def test_hmac_missing_header_names_it():
    verifier = build_verifier("hmac", {"header": "X-Signature"}, (SECRET,), "w")
    error = rejection(verifier, RAW, {})
    assert error.message == "missing signature header X-Signature"
    assert "scheme=hmac" in error.detail


TIMED = {"header": "X-Signature", "timestamp_header": "X-Timestamp"}


def _timed_headers(ts: str, message_ts: str | None = None) -> dict[str, str]:
    message = f"{message_ts or ts}.".encode() + RAW
    return {"X-Timestamp": ts, "X-Signature": _encoded("sha256", "hex", message)}


@pytest.mark.parametrize("options, skew, ok", [
    (TIMED, 0, True), (TIMED, 300, True), (TIMED, -300, True),
    (TIMED, 301, False), (TIMED, -301, False), (TIMED, 86400, False),
    ({**TIMED, "tolerance": "5m"}, 299, True), ({**TIMED, "tolerance": "10s"}, 11, False),
    ({**TIMED, "tolerance": "10s"}, -10, True), ({**TIMED, "tolerance": 30}, 31, False),
])
def test_hmac_timestamp_tolerance(options, skew, ok):
    verifier = build_verifier("hmac", options, (SECRET,), "w")
    ts = int(NOW)
    headers = lower(_timed_headers(str(ts)))
    if ok:
        verifier.verify(RAW, headers, NOW + skew, None)
        return
    error = rejection(verifier, RAW, headers, NOW + skew)
    assert error.message == "timestamp outside tolerance"
    assert f"skew={skew:+d}s" in error.detail and "header=X-Timestamp" in error.detail
    assert_no_leak(error, [SECRET], f"{ts}.".encode() + RAW)


@pytest.mark.parametrize("value, message", [
    (None, "missing timestamp header X-Timestamp"),
    ("", "invalid timestamp in header X-Timestamp"),
    ("17e8", "invalid timestamp in header X-Timestamp"),
    ("-5", "invalid timestamp in header X-Timestamp"),
    ("1.5", "invalid timestamp in header X-Timestamp"),
    ("١٢٣", "invalid timestamp in header X-Timestamp"),
    ("9" * 5000, "invalid timestamp in header X-Timestamp"),
])
def test_hmac_bad_timestamps(value, message):
    verifier = build_verifier("hmac", TIMED, (SECRET,), "w")
    headers = _timed_headers(str(int(NOW)))
    if value is None:
        del headers["X-Timestamp"]
    else:
        headers["X-Timestamp"] = value
    assert rejection(verifier, RAW, headers, NOW).message == message


def test_hmac_timestamp_is_signed():
    # A replayed signature with a freshened timestamp must not pass.
    verifier = build_verifier("hmac", TIMED, (SECRET,), "w")
    headers = _timed_headers(str(int(NOW)), message_ts=str(int(NOW) - 3600))
    assert rejection(verifier, RAW, headers, NOW).message == "invalid signature"


def test_hmac_nan_clock_refuses():
    verifier = build_verifier("hmac", TIMED, (SECRET,), "w")
    error = rejection(verifier, RAW, _timed_headers(str(int(NOW))), float("nan"))
    assert error.message == "timestamp outside tolerance"


def test_hmac_custom_template_with_header():
    options = {"header": "X-Sig", "timestamp_header": "X-Ts",
               "signed": "{header:X-Id}:{timestamp}:{body}"}
    verifier = build_verifier("hmac", options, (SECRET,), "w")
    ts = str(int(NOW))
    headers = {"X-Id": "msg_1", "X-Ts": ts,
               "X-Sig": _encoded("sha256", "hex", f"msg_1:{ts}:".encode() + RAW)}
    verifier.verify(RAW, lower(headers), NOW, None)
    assert rejection(verifier, RAW, {**headers, "X-Id": "msg_2"}, NOW).message == \
        "invalid signature"
    missing = rejection(verifier, RAW, {k: v for k, v in headers.items() if k != "X-Id"}, NOW)
    assert missing.message == "missing header X-Id"


# The generic scheme can express two published vendor schemes; their vectors must verify.
VENDOR_AS_HMAC = {
    "slack": ({"header": "X-Slack-Signature", "prefix": "v0=",
               "timestamp_header": "X-Slack-Request-Timestamp", "signed": "v0:{timestamp}:{body}"},
              lambda v: v["secret"].encode(), 1531420618),
    "standard": ({"header": "webhook-signature", "prefix": "v1,", "encoding": "base64",
                  "timestamp_header": "webhook-timestamp",
                  "signed": "{header:webhook-id}.{timestamp}.{body}"},
                 lambda v: base64.b64decode(v["secret"].removeprefix("whsec_")), 1614265330),
}


@needs_vectors
@pytest.mark.parametrize("vendor", sorted(VENDOR_AS_HMAC))
def test_hmac_verifies_vendor_vectors(vendor):
    options, key, now = VENDOR_AS_HMAC[vendor]
    vector = VECTORS[vendor]
    raw, headers, secret = vector["body"].encode(), lower(vector["headers"]), key(vector)
    verifier = build_verifier("hmac", options, (secret,), f"workflows.{vendor}.verify")
    verifier.verify(raw, headers, float(now), None)
    error = rejection(verifier, raw, headers, float(now) + 301)
    assert error.message == "timestamp outside tolerance"
    assert rejection(verifier, raw[:-1], headers, float(now)).message == "invalid signature"
