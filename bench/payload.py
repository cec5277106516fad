"""The request every receiver in the load benchmark is fed: a GitHub push, signed.

The body is constant, so its signature is computed once here and handed to wrk (whose Lua has
no HMAC); only the delivery id changes per request, which keeps the dedup from ever seeing a
repeat. Import it from the micro-benchmarks too, so that both measure the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json

SECRET = "fastwebhook-bench-secret"
BODY_SIZE = 1160  # bytes; the size ANCHORS.md measures with

_SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


def _push_event(message: str) -> dict:
    return {
        "ref": "refs/heads/main",
        "before": "9049f1265b7d61be4a8904a9a27120d2064dab3b",
        "after": _SHA,
        "repository": {
            "id": 186853002,
            "name": "fastwebhook",
            "full_name": "octo-org/fastwebhook",
            "private": False,
            "owner": {"login": "octo-org", "id": 6811672, "type": "Organization"},
            "html_url": "https://github.com/octo-org/fastwebhook",
            "default_branch": "main",
        },
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
        "created": False,
        "deleted": False,
        "forced": False,
        "compare": "https://github.com/octo-org/fastwebhook/compare/9049f1265b7d...6113728f27ae",
        "commits": [],
        "head_commit": {
            "id": _SHA,
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": True,
            "message": message,
            "timestamp": "2024-05-14T09:21:44+02:00",
            "url": f"https://github.com/octo-org/fastwebhook/commit/{_SHA}",
            "author": {"name": "Mona Octocat", "email": "octocat@github.com", "username": "octocat"},
            "added": [],
            "removed": [],
            "modified": ["fastwebhook/protocol.py", "README.md"],
        },
    }


def _build_body() -> bytes:
    # Pad the commit message so the body is exactly BODY_SIZE bytes, like a real push of that size.
    message = "Answer pipelined requests in order"
    unpadded = len(json.dumps(_push_event(message), separators=(",", ":")).encode())
    filler = "Responses leave in request order, so pipelining is correct by construction. " * 20
    message += "\n\n" + filler[: BODY_SIZE - unpadded - 4]  # "\n\n" is 4 bytes once JSON-escaped
    body = json.dumps(_push_event(message), separators=(",", ":")).encode()
    assert len(body) == BODY_SIZE, len(body)
    return body


BODY = _build_body()


def github_signature(body: bytes = BODY, secret: str = SECRET) -> str:
    """The X-Hub-Signature-256 header value GitHub would send for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "GitHub-Hookshot/a1b2c3d",
    "X-GitHub-Event": "push",
    "X-GitHub-Hook-ID": "292430182",
    "X-Hub-Signature-256": github_signature(),
}
"""Every header but X-GitHub-Delivery, which must differ per request."""
