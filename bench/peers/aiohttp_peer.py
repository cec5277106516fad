"""aiohttp web server receiving the GitHub webhook: verify, parse, answer 202, store nothing.

    python bench/peers/aiohttp_peer.py --port 18080 --secret fastwebhook-bench-secret
"""

from __future__ import annotations

import argparse
import hashlib
import hmac

import orjson
import uvloop
from aiohttp import web

INVALID_SIGNATURE = orjson.dumps({"error": "invalid signature"})
INVALID_JSON = orjson.dumps({"error": "invalid JSON body"})


def make_app(secret: bytes) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "").encode()):
            return web.Response(status=401, body=INVALID_SIGNATURE, content_type="application/json")
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.Response(status=400, body=INVALID_JSON, content_type="application/json")
        answer = {"delivery": request.headers.get("X-GitHub-Delivery"), "status": "queued"}
        return web.Response(status=202, body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/hook", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--secret", default="fastwebhook-bench-secret")
    args = parser.parse_args()
    web.run_app(
        make_app(args.secret.encode()),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
