"""Helpers the verification test modules share (this module holds no tests of its own).

Requests are built the way the server builds them: lower-cased headers, a `RequestView` made by
`RequestView.build` from the path, query bytes and Host header.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fastwebhook.verify import RequestView, VerificationError, sign_request


def _vectors_file() -> Path | None:
    candidates = [Path(__file__).resolve().parents[3] / "shared" / "vectors" / "signatures.json"]
    if os.environ.get("FASTWEBHOOK_VECTORS"):
        given_path = Path(os.environ["FASTWEBHOOK_VECTORS"])
        candidates.append(given_path / "signatures.json" if given_path.is_dir() else given_path)
    # a copy travels with the repo, so the vectors run wherever the suite runs
    candidates.append(Path(__file__).resolve().parents[1] / "data" / "signatures.json")
    return next((path for path in candidates if path.is_file()), None)


_VECTORS_PATH = _vectors_file()
VECTORS = json.loads(_VECTORS_PATH.read_text()) if _VECTORS_PATH else {}
needs_vectors = pytest.mark.skipif(not VECTORS, reason="signatures.json not found "
                                   "(../shared/vectors or $FASTWEBHOOK_VECTORS)")

KEY43 = base64.b64encode(bytes(range(100, 132))).decode().rstrip("=")
JSON_BODY = b'{"id": "evt_1", "event_id": "Ev1", "type": "event_callback", "note": "caf\xc3\xa9"}'
FEISHU_BODY = json.dumps({"schema": "2.0", "header": {"event_id": "e-1", "token": "vt-1"},
                          "event": {"text": "hello"}}).encode()
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOW = 1_700_000_000.0
URL = "https://hooks.example.com/api/webhooks/w?source=test"


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def view(url: str, headers: dict[str, str], method: str = "POST") -> RequestView:
    parts = urlsplit(url)
    headers = {"host": parts.netloc, **headers}
    return RequestView.build(method, parts.path, parts.query.encode(), headers,
                             tls=parts.scheme == "https")


def signed(scheme: str, raw: bytes, secret: bytes, options: dict, *, now: float = NOW,
           headers: dict[str, str] | None = None, method: str = "POST", url: str = URL
           ) -> tuple[bytes, dict[str, str], RequestView]:
    """(body, lower-cased headers, RequestView) of a request signed as the sender would."""
    headers = headers or {"Content-Type": "application/json"}
    out = sign_request(scheme, raw, secret, now, options, headers=headers, url=url,
                       method=method)
    all_headers = lower({**headers, **out.headers})
    return out.body, {"host": urlsplit(url).netloc, **all_headers}, \
        view(out.url, all_headers, method)


def attempt(verifier, raw: bytes, headers: dict[str, str], now: float,
            request: RequestView | None):
    """What the server would do: the handshake's answer if it is one, else verify's body."""
    if verifier.handshake is not None:
        answer = verifier.handshake(raw, headers, now, request)
        if answer is not None:
            return answer
    return verifier.verify(raw, headers, now, request)


def refused(verifier, raw: bytes, headers: dict[str, str], now: float,
            request: RequestView | None) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        attempt(verifier, raw, headers, now, request)
    error = caught.value
    assert (error.status, error.reason) == (401, "signature")
    assert error.message and "scheme=" in error.detail and "body_sha256=" in error.detail
    return error


def error_text(error: VerificationError) -> str:
    return " ".join([str(error), repr(error), error.message, error.detail or "",
                     repr(error.headers)])


def assert_secret_free(text: str, secrets, *also: str) -> None:
    """No secret (as text, hex or base64) and none of ``also`` (expected signatures) in text."""
    for secret in secrets:
        forms = {secret.decode(errors="replace"), secret.hex(),
                 base64.b64encode(secret).decode().rstrip("=")}
        for form in forms:
            if len(form) >= 4:
                assert form not in text, "a secret reached an error"
    for value in also:
        if len(value) >= 8:
            assert value not in text, "an expected signature reached an error"


def flip(data: bytes, index: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def change_char(text: str, index: int, alphabet: str = "0123456789abcdef") -> str:
    """``text`` with one character replaced by another of ``alphabet`` (never the same)."""
    index %= len(text)
    current = text[index]
    replacement = alphabet[0] if current != alphabet[0] else alphabet[1]
    return text[:index] + replacement + text[index + 1:]
