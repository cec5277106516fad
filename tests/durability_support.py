"""Shared by the tests that kill, restart and count: a child server's config, its store read
directly (read-only, beside the running server), and the wait until everything acknowledged ran."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import uuid
from pathlib import Path

from burst_support import wait_until
from conftest import ChildServer, write_config
from fastwebhook.store import batch_codec

FINAL = ("resolved", "failed", "error", "aborted")


HOOK = "/api/webhooks/hook"


# A full config (log level info: spawn_server waits for the "listening" and "ready" lines).
CHILD_CONFIG = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
durability = "commit"
[queue]
capacity = 100000
workers = %(workers)d
[log]
level = "info"
[admin]
token = "test-token"

[workflows.hook]
[workflows.hook.dedup]
key = "{{$context.headers.x-delivery}}"
ttl = "%(ttl)s"
[[workflows.hook.nodes]]
key = "answer"
type = "response"
body = { ok = true, n = "{{$context.data.n}}" }
"""


def child_config(tmp_path: Path, *, workers: int = 64, ttl: str = "24h") -> tuple[Path, Path]:
    config = write_config(tmp_path, CHILD_CONFIG % {"workers": workers, "ttl": ttl})
    return config, tmp_path / "fastwebhook.db"


def post(conn: http.client.HTTPConnection, delivery: str, n: int = 0) -> tuple[int, dict]:
    conn.request("POST", HOOK, body=json.dumps({"n": n}).encode(),
                 headers={"Content-Type": "application/json", "X-Delivery": delivery})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the store's file directly, read-only (WAL lets this run beside the server)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def executions_by_delivery(db: Path) -> dict[str, list[tuple[str, str, int]]]:
    """dedup key -> [(execution id text, status, attempts)] for every stored execution: the
    execution rows, and the intake's deliveries not claimed yet (queued)."""
    rows = query(db, "SELECT dedup_key, id, status, attempts FROM executions")
    [(claimed, partial)] = query(db, "SELECT claimed_seq, partial FROM claims")
    for n, (blob,) in enumerate(query(db, "SELECT deliveries FROM intake WHERE seq > ? ORDER BY seq", (claimed,))):
        rows += [(d.dedup_key, d.id, "queued", 0) for d in batch_codec.decode(blob)[partial if n == 0 else 0:]]
    found: dict[str, list] = {}
    for key, raw_id, status, attempts in rows:
        found.setdefault(key, []).append((str(uuid.UUID(bytes=raw_id)), status, attempts))
    return found


def terminate(child: ChildServer, timeout: float = 15.0) -> int:
    child.process.send_signal(signal.SIGTERM)
    return child.process.wait(timeout)


def unfinished(db: Path) -> int:
    [(pending,)] = query(db, "SELECT count(*) FROM executions WHERE status IN ('queued', 'started')")
    [(claimed, partial)] = query(db, "SELECT claimed_seq, partial FROM claims")
    [(unclaimed,)] = query(db, "SELECT coalesce(sum(count), 0) FROM intake WHERE seq > ?", (claimed,))
    return pending + unclaimed - partial


def wait_all_final(db: Path, acked: dict[str, str], timeout: float = 60.0) -> dict:
    def done():
        found = executions_by_delivery(db)
        return found if all(any(s in FINAL for _, s, _ in found.get(d, [])) for d in acked) else None
    found = wait_until(done, timeout, 0.25)
    assert found is not None, f"acknowledged executions never finished: {unfinished(db)} left"
    return found
