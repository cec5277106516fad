"""The prepared HMAC keys (RFC 2104's inner and outer states) give HMAC itself: RFC 4231's
published SHA-256 cases, and `hmac.new` for every key length around the block size."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from fastwebhook.verify import build_verifier
from fastwebhook.verify.base import VerificationError
from fastwebhook.verify.hmacs import keyed, mac

# RFC 4231 section 4: test case 1 (a short key) and test case 6 (a key longer than the block)
RFC_4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]


@pytest.mark.parametrize("key, data, expected", RFC_4231)
def test_published_sha256_cases(key, data, expected):
    (prepared,) = keyed([key], hashlib.sha256)
    assert mac(prepared, (data,)).hexdigest() == expected
    assert mac(prepared, (data[:3], data[3:])).hexdigest() == expected   # pieces hash as one


@pytest.mark.parametrize("digestmod", [hashlib.sha1, hashlib.sha256, hashlib.sha512])
def test_every_key_length_around_the_block(digestmod):
    data = bytes(range(256)) * 5
    block = digestmod().block_size
    for length in (0, 1, block - 1, block, block + 1, 2 * block + 3):
        key = bytes((7 * i + 1) % 256 for i in range(length))
        (prepared,) = keyed([key], digestmod)
        assert mac(prepared, (data,)).digest() == hmac.new(key, data, digestmod).digest(), length


def test_a_prepared_key_serves_request_after_request():
    (prepared,) = keyed([b"secret"], hashlib.sha256)
    first = mac(prepared, (b"one",)).hexdigest()
    mac(prepared, (b"two",))
    assert mac(prepared, (b"one",)).hexdigest() == first


def test_github_accepts_a_secret_longer_than_the_block():
    secret = b"s" * 100
    body = b'{"zen": "Keep it logically awesome."}'
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    verifier = build_verifier("github", {}, (secret,), "w")
    assert verifier.verify(body, {"x-hub-signature-256": signature}, 0.0, None) == body
    forged = "sha256=" + hmac.new(secret[:-1], body, hashlib.sha256).hexdigest()
    with pytest.raises(VerificationError, match="invalid signature"):
        verifier.verify(body, {"x-hub-signature-256": forged}, 0.0, None)
