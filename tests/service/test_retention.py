"""Retention (issue 9): what is older than `retention` goes, in short transactions — finished
executions with their jobs, intake batches whose deliveries all finished, request-log lines,
expired dedup keys — and what is newer, or still running, stays.  The real service on real
SQLite, its clock moved forward."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time

from conftest import write_config
from fastwebhook.service import maintenance
from fastwebhook.config.loader import load_config
from fastwebhook.service.service import Service
from fastwebhook.store.rows import Delivery, RequestLine, StoredRequest
from wait_support import wait_for_async

DAY = 86400.0
CONFIG = """
[storage]
url = "sqlite:///{db}"
retention = "7d"
[queue]
workers = 16
[workflows.hook]
path = "/hook"
[[workflows.hook.nodes]]
key = "positive"
type = "condition"
all = [["{{$context.data.n}}", ">", 0]]
"""


def id_at(seconds: float) -> bytes:
    """A UUIDv7 of that time, as the intake makes them."""
    return ((int(seconds * 1000) << 80) | (0x7000 << 64) | (0b10 << 62) | random.getrandbits(62)).to_bytes(16, "big")


def delivery(n: int, at: float, version: str) -> Delivery:
    request = StoredRequest("POST", "/hook", "", [("content-type", "application/json")], {}, "127.0.0.1", at, f"r{n}")
    return Delivery(id_at(at), "hook", version, request, b'{"n": %d}' % n, n * 7919 - (1 << 40), f"key-{n}", at + DAY)


def count(db_path, sql: str) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute(sql).fetchone()[0]


def test_the_purge_removes_what_is_older_than_the_retention_in_batches_and_keeps_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(maintenance, "PURGE_BATCH", 100)   # so that it takes many transactions
    config = load_config(str(write_config(tmp_path, CONFIG)))
    db_path = tmp_path / "fastwebhook.db"
    real_now = time.time()
    clock = [real_now]
    old_at, new_at = real_now - 10 * DAY, real_now - 1 * DAY

    async def main():
        service = Service(config, clock=lambda: clock[0])
        await service.start()
        try:
            version = config.workflows["hook"].version
            old = [delivery(n, old_at + n * 0.001, version) for n in range(1, 1201)]
            new = [delivery(n, new_at + n * 0.001, version) for n in range(5001, 5051)]
            for item in old + new:
                await service.submit(item)
            stats = service.execution_stats["hook"]
            await wait_for_async(lambda: sum(c.value for c in stats.by_status.values()) >= len(old) + len(new), 60,
                                 step=0.01, failure="the executions never all ran")
            for at in (old_at, new_at):
                service.dispatcher.log_request(RequestLine(at, "127.0.0.1", "GET", "/nowhere", None, 404,
                                                           "not found", 0, 0.1, f"q{at}", None))
            await service.drain()
            # one old execution still running (its process is about to be found dead, say)
            with sqlite3.connect(db_path) as db:
                db.execute("UPDATE executions SET status = 'started' WHERE id = ?", (old[0].id,))
            await service.purge()
        finally:
            await service.stop()
        return old, new

    old, new = asyncio.run(main())
    assert count(db_path, "SELECT count(*) FROM executions") == len(new) + 1
    assert count(db_path, f"SELECT count(*) FROM executions WHERE created_at < {real_now - 7 * DAY}") == 1
    assert count(db_path, "SELECT count(*) FROM jobs") == len(new) + 1          # one condition job each
    assert count(db_path, f"SELECT count(*) FROM requests WHERE at < {real_now - 7 * DAY}") == 0
    assert count(db_path, "SELECT count(*) FROM requests") == 1
    assert count(db_path, f"SELECT count(*) FROM dedup WHERE expires_at < {real_now}") == 0   # expired keys gone
    assert count(db_path, "SELECT count(*) FROM dedup") == len(new)
    # the intake keeps the batches of the recent deliveries and of the one still running
    kept = count(db_path, f"SELECT count(*) FROM intake WHERE first_at < {real_now - 7 * DAY}")
    assert kept >= 1
    assert count(db_path, f"SELECT coalesce(sum(count), 0) FROM intake WHERE first_at < {real_now - 7 * DAY}") < len(old)
    assert count(db_path, "SELECT count(*) FROM executions WHERE status = 'started'") == 1
