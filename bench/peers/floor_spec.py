"""The no-node floor with what SPEC.md asks of every request: the least a receiver that meets the
SPEC can do here for bench/fastwebhook-steady.toml's workflow (an upper bound for issue 17's
no-node rows, not a peer).

floor_workflow.py --no-nodes (HMAC, compare_digest, orjson, ONE blob row per group commit, 202
after it; per batch ONE transaction with each delivery's execution row and its dedup key), and,
inline, with nothing general in between, each duty SPEC.md sets for such a request and nothing
the SPEC leaves to choice:

    section 4   every answer carries X-Request-Id; an accepted one X-Execution-Id and
                {"execution_id": ID, "status": "queued"}; a repeat within the dedup ttl is
                answered 200 with the original's id (the key's window keeps its expiry); headers
                over max_header_size 431, Host exactly once in HTTP/1.1, the body held to
                max_body_size, read_timeout and keepalive_timeout kept
    section 3   the route (path -> workflow), its methods, its share of the queue (503 when full)
    section 8   a time-ordered id (UUIDv7) per execution; the stored request (method, path,
                query, headers with the signature's value redacted, ip, time, request id) kept
                with the body in the log, which is also the request log's line of an accepted
                request (status, body size, duration at the door)
    section 10  requests_total by code, request_duration_seconds, executions_total,
                execution_duration_seconds and queue_depth: counters and histogram cells in
                memory, read by GET /metrics (the lines the bench reads)

No verification schemes but this one, no templates, sync mode, replay, leases, several
processes, reloads or failure workflows: everything general fastwebhook carries is left out.

    python bench/peers/floor_spec.py --port 18080 --secret fastwebhook-bench-secret --db f.db
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import os
import random
import struct
import time
from bisect import bisect_left

import httptools
import orjson
import uvloop

import floor
import floor_workflow

MAX_HEADER_SIZE = 16384
MAX_BODY_SIZE = 1 << 20
READ_TIMEOUT, KEEPALIVE_TIMEOUT = 15.0, 75.0
CAPACITY = 10_000
DEDUP_TTL = 86400.0
WINDOW = 100_000            # keys the door remembers (fastwebhook's default window)
ROUTES = {b"/hook": "bench"}
REDACTED = frozenset({"x-hub-signature-256", "authorization", "cookie"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACCEPTED_HEAD = (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 73\r\n"
                 b"x-request-id: ")
DUPLICATE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 76\r\n"
                  b"x-request-id: ")
METRICS_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n"
_request_prefix = f"{os.getpid():x}-{os.urandom(3).hex()}-"
_requests = itertools.count(1)
_random = random.Random(os.urandom(8)).getrandbits
_last_ms = 0
_counter = 0


def new_id() -> bytes:
    """UUIDv7 (RFC 9562), a counter in rand_a keeping ids of one millisecond increasing."""
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    if ms > _last_ms:
        _last_ms, _counter = ms, 0
    else:
        _counter += 1
    return ((_last_ms << 80) | (0x7000 | _counter & 0xFFF) << 64 | (0b10 << 62) | _random(62)).to_bytes(16, "big")


def id_text(raw: bytes) -> bytes:
    h = raw.hex().encode()
    return b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


class Metrics:
    def __init__(self):
        self.requests: dict[int, int] = {}
        self.request_cells = [0] * (len(BUCKETS) + 2)   # by bucket, +Inf, then the sum
        self.executions = 0
        self.execution_cells = [0] * (len(BUCKETS) + 2)
        self.depth = 0

    def answered(self, code: int, seconds: float) -> None:
        self.requests[code] = self.requests.get(code, 0) + 1
        cells = self.request_cells
        cells[bisect_left(BUCKETS, seconds)] += 1
        cells[-1] += seconds

    def text(self) -> bytes:
        return (f'fastwebhook_executions_total{{workflow="bench",status="resolved"}} {self.executions}\n'
                f"fastwebhook_queue_depth {self.depth}\n").encode()


class Log:
    """Group commit of the log: ONE blob row per batch (floor.py --store log), each record the
    stored request, the door's figures and the body; 202 after the commit.  Each committed
    batch's executions are then resolved in ONE transaction, by a task of their own (as a claim
    follows the commits), so the next batch's append need not wait for it."""

    def __init__(self, store: floor.Store, metrics: Metrics):
        self.store = store
        self.metrics = metrics
        self.records: list[bytes] = []
        self.answers: list[tuple] = []    # (transport, answer bytes)
        self.resolving: list[tuple] = []  # (execution id, key hash, expires, received)
        self.committed: list[tuple] = []  # ... of the batches committed, waiting to be resolved
        self.wake = asyncio.Event()
        self.resolve_wake = asyncio.Event()
        store.thread.submit(store.db.executescript, floor_workflow.NO_NODES_SCHEMA).result()

    def add(self, record: bytes, transport, answer: bytes, execution: tuple) -> None:
        self.records.append(record)
        self.answers.append((transport, answer))
        self.resolving.append(execution)
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        thread = self.store.thread
        while True:
            await self.wake.wait()
            self.wake.clear()
            records, answers, resolving = self.records, self.answers, self.resolving
            self.records, self.answers, self.resolving = [], [], []
            await loop.run_in_executor(thread, self.append, records)
            for transport, answer in answers:
                if not transport.is_closing():
                    transport.write(answer)
            self.committed += resolving
            self.resolve_wake.set()

    async def run_resolver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.resolve_wake.wait()
            self.resolve_wake.clear()
            batch, self.committed = self.committed, []
            await loop.run_in_executor(self.store.thread, floor_workflow.resolve, self.store.db, batch)
            metrics = self.metrics
            metrics.executions += len(batch)
            metrics.depth -= len(batch)
            metrics.execution_cells[0] += len(batch)   # resolved in the claim: 0 s each

    def append(self, records: list[bytes]) -> None:
        self.store.db.execute("INSERT INTO log (records) VALUES (?)", (b"".join(records),))


class SpecProtocol(asyncio.Protocol):
    secret = hmac.new(b"", digestmod=hashlib.sha256)   # keyed at start: copied per request
    log: Log | None = None
    metrics: Metrics | None = None
    window: dict[int, tuple[float, bytes]] = {}          # dedup hash -> (expires, execution id), bounded
    key_prefix = hashlib.blake2b(b"bench\x00", digest_size=8)

    def connection_made(self, transport) -> None:
        self.refusal = b"400 Bad Request"
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[0]
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + KEEPALIVE_TIMEOUT
        self.timer = self.loop.call_later(1.0, self.tick)

    def connection_lost(self, exc) -> None:
        self.timer.cancel()

    def tick(self) -> None:
        if self.loop.time() > self.deadline:
            self.transport.close()
        else:
            self.timer = self.loop.call_later(1.0, self.tick)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.refuse(self.refusal)

    def refuse(self, status: bytes) -> None:
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\nx-request-id: "
                             + f"{_request_prefix}{next(_requests):x}".encode() + b"\r\n\r\n")
        self.transport.close()

    def on_message_begin(self) -> None:
        self.refusal = b"400 Bad Request"   # what a parser error is answered with
        self.url = b""
        self.pairs: list[tuple[str, str]] = []
        self.size = 0
        self.hosts = 0
        self.chunks: list[bytes] = []
        self.body_size = 0
        self.deadline = self.loop.time() + READ_TIMEOUT

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.size += len(name) + len(value) + 4
        if self.size > MAX_HEADER_SIZE:
            self.refusal = b"431 Request Header Fields Too Large"
            raise ValueError("headers too large")
        name = name.lower()
        if name == b"host":
            self.hosts += 1
        self.pairs.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.hosts != 1 and self.parser.get_http_version() == "1.1":
            raise ValueError("Host missing or repeated")

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > MAX_BODY_SIZE:
            self.refusal = b"413 Content Too Large"
            raise ValueError("body too large")
        self.chunks.append(chunk)

    def on_message_complete(self) -> None:
        started = time.perf_counter()
        received = time.time()
        request_id = f"{_request_prefix}{next(_requests):x}"
        metrics = self.metrics
        self.deadline = self.loop.time() + KEEPALIVE_TIMEOUT
        path, _, query = self.url.partition(b"?")
        method = self.parser.get_method()
        if method == b"GET" and path == b"/metrics":   # the lines the bench reads
            text = metrics.text()
            self.transport.write(METRICS_HEAD % len(text) + text)
            return
        workflow = ROUTES.get(path)
        if workflow is None or method != b"POST":
            self.answer(request_id, b"404 Not Found", 404, started)
            return
        if metrics.depth >= CAPACITY:
            self.answer(request_id, b"503 Service Unavailable", 503, started)
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        headers = dict(self.pairs)
        mac = self.secret.copy()
        mac.update(body)
        if not hmac.compare_digest("sha256=" + mac.hexdigest(), headers.get("x-hub-signature-256", "").lower()):
            self.answer(request_id, b"401 Unauthorized", 401, started)
            return
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            self.answer(request_id, b"400 Bad Request", 400, started)
            return
        key = headers.get("x-github-delivery", "")
        digest = self.key_prefix.copy()
        digest.update(key.encode())
        key_hash = int.from_bytes(digest.digest(), "big", signed=True)
        seen = self.window.get(key_hash)
        rid = request_id.encode()
        if seen is not None and seen[0] > received:
            original = id_text(seen[1])
            self.transport.write(b"".join((DUPLICATE_HEAD, rid, b"\r\nx-execution-id: ", original, b"\r\n\r\n",
                                           b'{"execution_id":"', original, b'","status":"duplicate"}')))
            metrics.answered(200, time.perf_counter() - started)
            return
        execution = new_id()
        expires = received + DEDUP_TTL
        window = self.window
        if len(window) >= WINDOW:   # bounded as the SPEC allows (the door's check may be a cache)
            window = SpecProtocol.window = {}
        window[key_hash] = (expires, execution)
        text = id_text(execution)
        stored = orjson.dumps((method.decode(), path.decode("latin-1"), query.decode("latin-1"),
                               [(name, "[redacted]") if name in REDACTED else (name, value)
                                for name, value in self.pairs], self.peer, received, request_id, key))
        door_seconds = time.perf_counter() - started
        record = struct.pack("<16sIIdd", execution, len(stored), len(body), door_seconds, expires) + stored + body
        metrics.depth += 1
        metrics.answered(202, door_seconds)
        self.log.add(record, self.transport,
                     b"".join((ACCEPTED_HEAD, rid, b"\r\nx-execution-id: ", text, b"\r\n\r\n",
                               b'{"execution_id":"', text, b'","status":"queued"}')),
                     (execution, key_hash, expires, received))

    def answer(self, request_id: str, status: bytes, code: int, started: float) -> None:
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nx-request-id: "
                             + request_id.encode() + b"\r\n\r\n")
        self.metrics.answered(code, time.perf_counter() - started)


async def serve(port: int, db: str) -> None:
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    SpecProtocol.metrics = metrics
    SpecProtocol.log = Log(floor.Store(db, log=True), metrics)
    loop.create_task(SpecProtocol.log.run())
    loop.create_task(SpecProtocol.log.run_resolver())
    server = await loop.create_server(SpecProtocol, "127.0.0.1", port, reuse_address=True, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--secret", default="fastwebhook-bench-secret")
    parser.add_argument("--db", default="floor-spec.db")
    args = parser.parse_args()
    SpecProtocol.secret = hmac.new(args.secret.encode(), digestmod=hashlib.sha256)
    uvloop.run(serve(args.port, args.db))


if __name__ == "__main__":
    main()
