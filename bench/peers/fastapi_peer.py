"""FastAPI on uvicorn receiving the GitHub webhook the way a Python team would write it by hand.

Verify, parse, then insert the delivery into SQLite (WAL, synchronous=FULL like fastwebhook's
"commit" durability) through one aiosqlite connection opened at startup, committing per request,
and answer 202.

    python bench/peers/fastapi_peer.py --port 18080 --secret fastwebhook-bench-secret --db /tmp/peer.db
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import tempfile
from contextlib import asynccontextmanager

import aiosqlite
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    body        BLOB NOT NULL
)
"""


def make_app(secret: bytes, db_path: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.db = await aiosqlite.connect(db_path)
        await app.state.db.execute("PRAGMA journal_mode=WAL")
        await app.state.db.execute("PRAGMA synchronous=FULL")
        await app.state.db.execute(SCHEMA)
        await app.state.db.commit()
        yield
        await app.state.db.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/hook")
    async def receive(request: Request) -> Response:
        body = await request.body()
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, request.headers.get("x-hub-signature-256", "").encode()):
            return json_response(401, {"error": "invalid signature"})
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return json_response(400, {"error": f"invalid JSON body: {error}"})
        delivery_id = request.headers.get("x-github-delivery")
        if not delivery_id:
            return json_response(400, {"error": "missing X-GitHub-Delivery"})
        db = request.app.state.db
        cursor = await db.execute(
            "INSERT INTO deliveries (delivery_id, body) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (delivery_id, body),
        )
        await db.commit()
        if cursor.rowcount == 0:
            return json_response(200, {"delivery": delivery_id, "status": "duplicate"})
        return json_response(202, {"delivery": delivery_id, "status": "queued"})

    return app


def json_response(status: int, content: dict) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--secret", default="fastwebhook-bench-secret")
    parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "fastapi-peer.db"))
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.secret.encode(), args.db),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
