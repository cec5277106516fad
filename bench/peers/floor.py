"""The floor: the least a durable webhook receiver can do in Python, on the same parts.

An httptools + uvloop protocol that does what every webhook receiver must and nothing more: it
checks X-Hub-Signature-256 (HMAC-SHA256, compare_digest), parses the body with orjson, drops a
delivery id it has seen (an in-memory set), and answers 202.  `--store` adds a durable write per
group commit, in SQLite WAL with synchronous=FULL, written by one thread crossing per batch:

    --store none     no storage at all (ANCHORS.md's "bare + HMAC + orjson" row)
    --store commit   ONE blob row holding every body of the batch plus one 64-bit dedup row per
                     request (a B-tree insert each); 202 only after the batch is committed
    --store memory   the same rows; 202 at once while less than one batch (1000) waits, else
                     after the commit
    --store log      ONE blob row per batch and nothing else: each request's delivery id and
                     body inside it (the in-memory set can be rebuilt from it), no per-request
                     row; 202 only after the commit (ANCHORS.md's cheapest durable write)

Answers come in request order only without pipelining (wrk does not pipeline).
It keeps no request log, no execution records, no workers, no metrics: it is an upper bound for
what any receiver meeting SPEC.md could reach with Python and SQLite on this machine, not a peer.

    python bench/peers/floor.py --port 18080 --secret fastwebhook-bench-secret --store log --db f.db
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import sqlite3
import struct
from concurrent.futures import ThreadPoolExecutor

import httptools
import orjson
import uvloop

ACCEPTED = (b"HTTP/1.1 202 Accepted\r\nContent-Length: 19\r\nContent-Type: application/json\r\n\r\n"
            b'{"status":"queued"}')
UNAUTHORIZED = (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 29\r\nContent-Type: application/json\r\n"
                b'\r\n{"error":"invalid signature"}')
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_BATCH = 1000
SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, bodies BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dedup (hash INTEGER PRIMARY KEY, batch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, records BLOB NOT NULL);
"""


class Store:
    """One SQLite connection on its own thread; a batch is one call, one transaction."""

    def __init__(self, path: str, log: bool):
        self.thread = ThreadPoolExecutor(1, "floor-store")
        self.db = self.thread.submit(self._open, path).result()
        self.write = self.write_log if log else self.write_rows

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return db

    def write_rows(self, bodies: list[bytes], keys: list[bytes]) -> None:
        """--store commit and memory: the batch's bodies in one row, a dedup row per request."""
        blob = b"".join(struct.pack("<I", len(body)) + body for body in bodies)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        seq = db.execute("INSERT INTO batches (bodies) VALUES (?)", (blob,)).lastrowid
        db.executemany("INSERT OR IGNORE INTO dedup (hash, batch) VALUES (?, ?)",
                       [(hash(key), seq) for key in keys])
        db.execute("COMMIT")

    def write_log(self, bodies: list[bytes], keys: list[bytes]) -> None:
        """--store log: the whole batch, dedup keys included, as one append."""
        blob = b"".join(struct.pack("<HI", len(key), len(body)) + key + body for key, body in zip(keys, bodies))
        self.db.execute("INSERT INTO log (records) VALUES (?)", (blob,))  # autocommit: one transaction


class Writer:
    """Group commit: what arrives while batch N is written goes into batch N+1."""

    def __init__(self, store: Store, answer_early: bool):
        self.store = store
        self.answer_early = answer_early
        self.bodies: list[bytes] = []
        self.keys: list[bytes] = []      # delivery ids
        self.answers: list = []          # transports waiting for this batch's commit (or None)
        self.in_flight = 0
        self.wake = asyncio.Event()

    def add(self, body: bytes, key: bytes, transport) -> bool:
        """True when the caller may answer now (memory mode below the backlog bound)."""
        early = self.answer_early and len(self.bodies) + self.in_flight < MAX_BATCH
        self.bodies.append(body)
        self.keys.append(key)
        self.answers.append(None if early else transport)
        self.wake.set()
        return early

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            bodies, keys, answers = self.bodies, self.keys, self.answers
            self.bodies, self.keys, self.answers = [], [], []
            self.in_flight = len(bodies)
            await loop.run_in_executor(self.store.thread, self.store.write, bodies, keys)
            self.in_flight = 0
            for transport in answers:
                if transport is not None and not transport.is_closing():
                    transport.write(ACCEPTED)


class FloorProtocol(asyncio.Protocol):
    secret: bytes = b""
    writer: Writer | None = None
    seen: set[int] = set()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.headers = {}
        self.chunks = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        body = b"".join(self.chunks)
        expected = b"sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, self.headers.get(b"x-hub-signature-256", b"")):
            self.transport.write(UNAUTHORIZED)
            return
        orjson.loads(body)
        key = self.headers.get(b"x-github-delivery", b"")
        key_hash = hash(key)
        if self.writer is None or key_hash in self.seen:
            self.transport.write(ACCEPTED)
            return
        self.seen.add(key_hash)
        if self.writer.add(body, key, self.transport):
            self.transport.write(ACCEPTED)


async def serve(port: int, store: str, db: str) -> None:
    loop = asyncio.get_running_loop()
    if store != "none":
        FloorProtocol.writer = Writer(Store(db, log=store == "log"), answer_early=store == "memory")
        loop.create_task(FloorProtocol.writer.run())
    server = await loop.create_server(FloorProtocol, "127.0.0.1", port, reuse_address=True, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--secret", default="fastwebhook-bench-secret")
    parser.add_argument("--store", choices=("none", "commit", "memory", "log"), default="commit")
    parser.add_argument("--db", default="floor.db")
    args = parser.parse_args()
    FloorProtocol.secret = args.secret.encode()
    uvloop.run(serve(args.port, args.store, args.db))


if __name__ == "__main__":
    main()
