"""Several group commits in flight (`Store.appenders`): on PostgreSQL a commit that has not come
back does not hold up the batch behind it, unless a workflow has an order_key (its executions
run in arrival order, so its batches must land in the order they were made).  SQLite appends
one at a time.  A real server, real PostgreSQL and SQLite; a commit is held by a lock another
connection takes on the intake table (or the SQLite file), then let go: nothing acknowledged is
lost either way."""

from __future__ import annotations

import asyncio
import http.client
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

import store_support
from store_support import POSTGRES
from wait_support import wait_for

url = store_support.url

WORKFLOWS = """
[workflows.plain]
path = "/plain"
[workflows.lane]
path = "/lane"
"""
ORDER_KEY = 'order_key = "{{$context.data.order}}"\n'


class IntakeLock:
    """The intake's table locked against inserts by a connection of the test's own: appends
    wait on it, in flight, until `release()`."""

    def __init__(self, url: str, db: str):
        self.url, self.db = url, db
        self.loop = asyncio.new_event_loop()
        self.connection = None
        self.sqlite = None

    def take(self) -> None:
        if self.url.startswith("sqlite"):
            self.sqlite = sqlite3.connect(self.db, timeout=10)
            self.sqlite.execute("BEGIN IMMEDIATE")   # the one writer's lock: no append commits
            return
        schema = self.url.rpartition("schema=")[2]

        async def take():
            self.connection = await asyncpg.connect(POSTGRES, server_settings={"search_path": schema})
            await self.connection.execute("BEGIN")
            await self.connection.execute("LOCK TABLE intake IN EXCLUSIVE MODE")   # reads go on, inserts wait
        self.loop.run_until_complete(take())

    def release(self) -> None:
        if self.sqlite is not None:
            self.sqlite.rollback()
            self.sqlite.close()
            self.sqlite = None
        if self.connection is not None:
            self.loop.run_until_complete(self.connection.close())
            self.connection = None
        self.loop.close()


def _config(url: str, ordered: bool) -> str:
    lane = WORKFLOWS + (ORDER_KEY if ordered else "")
    return (f'[server]\nlisten = ["127.0.0.1:0"]\n[storage]\nurl = "{url}"\n'
            f'[log]\nlevel = "warning"\n{lane}')


def _post(server, path: str, order: int) -> int:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=20)
    try:
        connection.request("POST", path, body=b'{"order": %d}' % order, headers={"content-type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def _commits(server) -> tuple[int, int]:
    """(appends in flight, deliveries waiting for a writer)."""
    intake = server.server.service.intake

    async def read():
        return len(intake.committing), len(intake.open)
    return server.call(read)


def _resolved(server) -> int:
    stats = server.server.service.execution_stats
    return sum(int(stats[key].by_status["resolved"].value) for key in ("plain", "lane"))


@pytest.mark.parametrize("ordered", [False, True], ids=["no-order-key", "order-key"])
def test_a_commit_in_flight_holds_up_the_next_batch_only_where_order_or_sqlite_needs_it(serve, url, ordered, tmp_path):
    server = serve(_config(url, ordered))
    parallel = url.startswith("postgresql") and not ordered
    lock = IntakeLock(url, server.db)
    lock.take()
    with ThreadPoolExecutor(2) as senders:
        try:
            first = senders.submit(_post, server, "/lane", 1)
            wait_for(lambda: _commits(server) == (1, 0), failure=lambda: f"first append not in flight: {_commits(server)}")
            second = senders.submit(_post, server, "/plain", 2)
            # the second batch: a commit of its own beside the first, or waiting for a writer
            expected = (2, 0) if parallel else (1, 1)
            wait_for(lambda: _commits(server) == expected,
                     failure=lambda: f"expected {expected} (in flight, waiting), saw {_commits(server)}")
        finally:
            lock.release()
        assert first.result(20) == 202 and second.result(20) == 202
    wait_for(lambda: _resolved(server) == 2, failure=lambda: f"{_resolved(server)} of 2 executions resolved")
    assert _commits(server) == (0, 0)
