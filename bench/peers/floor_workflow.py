"""The workflow floor: the least a receiver can do here to run bench/fastwebhook-workflow.toml's
workflow for every push, on the same parts (an upper bound for issue 8's benchmark, not a peer).

Ingest is floor.py's `--store log` (HMAC, compare_digest, orjson, an in-memory set of delivery
ids, ONE blob row per group commit, 202 after the commit).  Then, per committed batch, for up to
RUN_BATCH deliveries at a time, with nothing general in between:

    condition   data["ref"] == "refs/heads/main", in Python, on the body parsed at the door
    script      the workflow's script, in V8 (mini-racer, one reused context), the whole batch
                in ONE call: one JSON text of every run's $context in, one JSON array out
    create      a row in records_pushes (a unique index on delivery; ids handed out here, so all
                go in with one executemany; a refused row would fail the batch, and the bench's
                deliveries are unique)
    records     the execution row with its final status and 3 job rows per execution (results
                as JSON), in ONE transaction with the records: effects once, for free

The execution row is written once, final; the log holds every delivery until then, so after a
crash a delivery in the log without its execution row is run again (this floor does not
implement the recovery; it writes what recovery needs).  No verification schemes, dedup window,
claims, leases, worker pool, templates, node registry, metrics beyond the two lines the bench
reads, request log, sync mode, order keys, timeouts or memory limits for scripts.

With `--no-nodes` it is the floor of a workflow that runs nothing (bench/fastwebhook-steady.toml's):
per batch ONE transaction with what SPEC.md's claim must write for each delivery and nothing
more, its execution row (final: resolved) and its dedup key in the unique index (a random 64-bit
key: a B-tree insert each), with synchronous=NORMAL as fastwebhook's claim (the FULL log holds
every delivery until then).

    python bench/peers/floor_workflow.py --port 18080 --secret fastwebhook-bench-secret --db f.db
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import struct
import time

import orjson
import uvloop
from py_mini_racer import MiniRacer

import floor

RUN_BATCH = 256
SCRIPT = """
const push = $context.data;
return { branch: push.ref.replace('refs/heads/', ''), commit: push.after, pusher: push.pusher.name };
"""
DRIVER = """
const __script = new Function("$context", %s);
function __runBatch(text) { return JSON.stringify(JSON.parse(text).map(__script)); }
""" % orjson.dumps(SCRIPT).decode()
# what --no-nodes writes (and floor_spec.py): each execution's row and its dedup key
NO_NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (id BLOB PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, finished_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_keys (hash INTEGER PRIMARY KEY, execution BLOB NOT NULL, expires_at REAL NOT NULL);
"""
SCHEMA = NO_NODES_SCHEMA + """
CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY, execution BLOB NOT NULL, position INTEGER NOT NULL,
    node TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, result BLOB, duration_ms REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_execution ON jobs (execution, position);
CREATE TABLE IF NOT EXISTS records_pushes (id INTEGER PRIMARY KEY, delivery TEXT, branch TEXT, "commit" TEXT,
    pusher TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS records_pushes_unique_1 ON records_pushes (delivery);
"""
DEDUP_TTL = 86400.0
METRICS = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n")
_ids = itertools.count()


def new_id() -> bytes:
    """Time-ordered, like fastwebhook's: inserts append to the B-tree."""
    return struct.pack(">QQ", time.time_ns(), next(_ids))


class Runner:
    """Runs what each group commit made durable, a batch at a time."""

    def __init__(self, store: floor.Store, no_nodes: bool = False):
        self.store = store
        self.no_nodes = no_nodes
        self.db = store.db
        store.thread.submit(self.db.executescript, SCHEMA).result()
        # record ids handed out here, so the records go in with executemany (no RETURNING)
        self.next_record = store.thread.submit(
            lambda: self.db.execute("SELECT coalesce(max(id), 0) FROM records_pushes").fetchone()[0]).result()
        self.racer = None if no_nodes else MiniRacer()
        self.pending: list[tuple[bytes, dict, float]] = []    # (delivery id, data, received at)
        self.wake = asyncio.Event()
        self.accepted = 0
        self.finished = 0

    def add(self, key: bytes, data: dict) -> None:
        self.pending.append((key, data, time.time()))
        self.accepted += 1
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.racer is not None:
            await self.racer.eval_cancelable(DRIVER)
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch, self.pending = self.pending[:RUN_BATCH], self.pending[RUN_BATCH:]
                if self.no_nodes:
                    await loop.run_in_executor(self.store.thread, self.resolve, batch)
                    self.finished += len(batch)
                    continue
                on_main = [run for run in batch if run[1].get("ref") == "refs/heads/main"]
                scopes = orjson.dumps([{"data": data, "headers": {"x-github-delivery": key.decode()}}
                                       for key, data, _ in on_main]).decode()
                results = orjson.loads(await self.racer.eval_cancelable(
                    f"__runBatch({orjson.dumps(scopes).decode()})"))
                await loop.run_in_executor(self.store.thread, self.write, batch, on_main, results)
                self.finished += len(batch)

    def resolve(self, batch) -> None:
        """--no-nodes: each delivery's execution row, final, and its key in the unique index."""
        expires = time.time() + DEDUP_TTL
        resolve(self.db, [(new_id(), hash(key), expires, received) for key, _, received in batch])

    def write(self, batch, on_main, results) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".000Z"
        ids = {key: new_id() for key, _, _ in batch}
        jobs, records = [], []
        for key, data, _ in batch:
            jobs.append((ids[key], 0, "is_main", "condition", "resolved", b"true" if data.get("ref") == "refs/heads/main"
                         else b"false", 0.0))
        for (key, _, _), result in zip(on_main, results):
            jobs.append((ids[key], 1, "summary", "script", "resolved", orjson.dumps(result), 0.0))
            self.next_record += 1
            record = (self.next_record, key.decode(), result["branch"], result["commit"], result["pusher"], stamp, stamp)
            records.append(record)
            row = dict(zip(("id", "delivery", "branch", "commit", "pusher", "created_at", "updated_at"), record))
            jobs.append((ids[key], 2, "record", "create", "resolved", orjson.dumps(row), 0.0))
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany('INSERT INTO records_pushes VALUES (?, ?, ?, ?, ?, ?, ?)', records)
            db.executemany("INSERT INTO jobs (execution, position, node, type, status, result, duration_ms) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", jobs)
            db.executemany("INSERT INTO executions VALUES (?, 'bench', 'resolved', ?, ?)",
                           [(ids[key], received, now) for key, _, received in batch])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def resolve(db, rows: list[tuple[bytes, int, float, float]]) -> None:
    """Executions that run nothing, ONE transaction: each one's row, final (resolved), and its
    dedup key in the unique index; rows of (execution id, key hash, its expiry, received at)."""
    now = time.time()
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT OR IGNORE INTO dedup_keys VALUES (?, ?, ?)",
                       [(key_hash, execution, expires) for execution, key_hash, expires, _ in rows])
        db.executemany("INSERT INTO executions VALUES (?, 'bench', 'resolved', ?, ?)",
                       [(execution, received, now) for execution, _, _, received in rows])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.execute("PRAGMA synchronous=FULL")   # the log's appends


class WorkflowProtocol(floor.FloorProtocol):
    runner: Runner | None = None

    def on_message_complete(self) -> None:
        """floor.FloorProtocol's, keeping the parsed body for the run; GET is the progress."""
        if self.transport.is_closing():
            return
        if self.parser.get_method() == b"GET":   # the two lines of /metrics the bench reads
            runner = self.runner
            text = (f'fastwebhook_executions_total{{workflow="bench",status="resolved"}} {runner.finished}\n'
                    f"fastwebhook_queue_depth {runner.accepted - runner.finished}\n").encode()
            self.transport.write(METRICS % len(text) + text)
            return
        body = b"".join(self.chunks)
        expected = b"sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, self.headers.get(b"x-hub-signature-256", b"")):
            self.transport.write(floor.UNAUTHORIZED)
            return
        data = orjson.loads(body)
        key = self.headers.get(b"x-github-delivery", b"")
        key_hash = hash(key)
        if key_hash in self.seen:
            self.transport.write(floor.ACCEPTED)
            return
        self.seen.add(key_hash)
        self.writer.add(body, key, self.transport)
        self.writer.data.append(data)


class RunningWriter(floor.Writer):
    """floor.Writer, and each committed batch handed to the runner."""

    def __init__(self, store: floor.Store, runner: Runner):
        super().__init__(store, answer_early=False)
        self.runner = runner
        self.data: list = []    # each body as parsed at the door

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            bodies, keys, answers, data = self.bodies, self.keys, self.answers, self.data
            self.bodies, self.keys, self.answers, self.data = [], [], [], []
            await loop.run_in_executor(self.store.thread, self.store.write, bodies, keys)
            for transport in answers:
                if not transport.is_closing():
                    transport.write(floor.ACCEPTED)
            for key, parsed in zip(keys, data):
                self.runner.add(key, parsed)


async def serve(port: int, db: str, no_nodes: bool) -> None:
    loop = asyncio.get_running_loop()
    store = floor.Store(db, log=True)
    runner = Runner(store, no_nodes)
    WorkflowProtocol.runner = runner
    WorkflowProtocol.writer = RunningWriter(store, runner)
    loop.create_task(WorkflowProtocol.writer.run())
    loop.create_task(runner.run())
    server = await loop.create_server(WorkflowProtocol, "127.0.0.1", port, reuse_address=True, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--secret", default="fastwebhook-bench-secret")
    parser.add_argument("--db", default="floor-workflow.db")
    parser.add_argument("--no-nodes", action="store_true",
                        help="the floor of a workflow that runs nothing: execution rows and dedup keys only")
    args = parser.parse_args()
    WorkflowProtocol.secret = args.secret.encode()
    uvloop.run(serve(args.port, args.db, args.no_nodes))


if __name__ == "__main__":
    main()
