"""The request every receiver in the load benchmark is fed: a GitHub push, signed.

The body is constant, so its signature is computed once here and handed to wrk (whose Lua has
no HMAC); only the delivery id changes per request, which keeps the dedup from ever seeing a
repeat. Import it from the micro-benchmarks too, so that both measure the same bytes.

The verification-family rows (`signed_request`) send the same body and the same other headers,
signed by another scheme instead: only what that scheme's sender adds differs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

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


# --- the verification families ---------------------------------------------------------------
# One signed request per scheme family, for bench/load.py's family rows. GitHub's signature
# covers the body alone, so a unique X-GitHub-Delivery per request (its dedup key) costs nothing
# to sign. Standard Webhooks signs webhook-id too, which wrk's Lua cannot re-sign per request:
# those rows keep webhook-id constant (the verification work is the same for every request) and
# their workflows take the dedup key from UNIQUE_HEADER, which nobody signs; so does token.

FAMILIES = ("github", "standard", "ed25519", "token")
GITHUB_DELIVERY = "X-GitHub-Delivery"
UNIQUE_HEADER = "X-Delivery"  # the dedup key of the standard, ed25519 and token workflows
TOKEN_HEADER = "X-Webhook-Token"
STANDARD_MESSAGE_ID = "msg_2f0cbb1a6f3e4d0f9c1f1b7a"  # webhook-id: signed, so constant
TIMESTAMP_TOLERANCE = 300.0  # seconds: the standard scheme's default, which the configs keep

# Keys fixed (not generate_keypair()) so the configs' defaults work by hand, too.
STANDARD_SECRET = "whsec_" + base64.b64encode(SECRET.encode()).decode()
ED25519_SIGNING_KEY = "whsk_" + base64.b64encode(hashlib.sha256(b"fastwebhook-bench-ed25519").digest()).decode()
ED25519_PUBLIC_KEY = "whpk_9UWL4JZKVCmrSSv3Um88hKTRaQ3wUMMaM3fYQqeImyo="  # ED25519_SIGNING_KEY's

RECEIVER_SECRETS = {  # what each family's receiver is configured with
    "github": SECRET,
    "standard": STANDARD_SECRET,
    "ed25519": ED25519_PUBLIC_KEY,
    "token": SECRET,
}


@dataclass(frozen=True)
class SignedRequest:
    headers: dict[str, str]  # every constant header, the signature included
    unique_header: str  # set to a new id on every request: the workflow's dedup key
    forged: dict[str, str]  # replacements for some of `headers` that a verifier must refuse (401)


def signed_request(family: str, now: float) -> SignedRequest:
    """BODY as a sender of ``family`` sends it at ``now`` (the standard schemes' timestamp)."""
    if family == "github":
        return SignedRequest(dict(HEADERS), GITHUB_DELIVERY,
                             {"X-Hub-Signature-256": "sha256=" + "0" * 64})
    from fastwebhook.verify import sign  # the library's own sender: what a real one adds

    others = {name: value for name, value in HEADERS.items() if name != "X-Hub-Signature-256"}
    if family == "standard":
        added = sign("standard", BODY, STANDARD_SECRET.encode(), now,
                     headers={"webhook-id": STANDARD_MESSAGE_ID})
        forged = {"webhook-signature": "v1," + base64.b64encode(bytes(32)).decode()}
    elif family == "ed25519":
        added = sign("standard", BODY, ED25519_SIGNING_KEY.encode(), now,
                     headers={"webhook-id": STANDARD_MESSAGE_ID})
        forged = {"webhook-signature": "v1a," + base64.b64encode(bytes(64)).decode()}
    elif family == "token":
        added = sign("token", BODY, SECRET.encode(), now, {"header": TOKEN_HEADER})
        forged = {TOKEN_HEADER: "not-" + SECRET}
    else:
        raise ValueError(f"unknown verification family {family!r} (known: {', '.join(FAMILIES)})")
    return SignedRequest({**others, **added}, UNIQUE_HEADER, forged)
