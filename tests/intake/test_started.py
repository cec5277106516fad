"""An execution's "started" is written only once it has run for a while (STARTED_AFTER): one that
ends sooner has its final status as its one write, keeping when it started; one that runs on
shows "started" meanwhile.  A real server and SQLite file; a trigger the test puts on the
executions table records every status the server writes."""

from __future__ import annotations

import sqlite3
import threading

from client_support import post_json, wait_for_execution, wait_until_started
from fastwebhook.core.ids import from_text
from fastwebhook.intake.dispatch import STARTED_AFTER
from fastwebhook.store.rows import Final, Records, Status
from http_support import Reply
from wait_support import wait_for

CONFIG = """
[workflows.held]
path = "/held"
[[workflows.held.nodes]]
key = "call"
type = "request"
url = "%s/slow"
"""


def _watch_statuses(db: str) -> sqlite3.Connection:
    watcher = sqlite3.connect(db, timeout=10, isolation_level=None)
    watcher.executescript("""
        CREATE TABLE written (id BLOB, status TEXT);
        CREATE TRIGGER status_written AFTER UPDATE OF status ON executions
        BEGIN INSERT INTO written VALUES (new.id, new.status); END;""")
    return watcher


def _written(watcher: sqlite3.Connection, execution: str) -> list[str]:
    return [status for (status,) in watcher.execute(
        "SELECT status FROM written WHERE id = ? ORDER BY rowid", (from_text(execution),))]


def test_a_quick_execution_writes_its_final_status_only_and_a_long_one_shows_started(serve, endpoint):
    quick_call, long_call = threading.Event(), threading.Event()
    endpoint.replies = [Reply(hold=quick_call), Reply(hold=long_call)]
    running = serve(CONFIG % endpoint.url)
    watcher = _watch_statuses(running.db)
    try:
        # Its call held until the endpoint has it, then let go: long enough for the records to
        # be flushed meanwhile (each claim round flushes), short of STARTED_AFTER on any machine
        # but a stalled one, which the assertions allow for.
        quick = post_json(running, "/held", {}).json()["execution_id"]
        wait_for(lambda: len(endpoint.received) == 1, failure="the quick execution's call never came")
        quick_call.set()
        assert wait_for_execution(running, quick)["status"] == "resolved"
        [(started_at, finished_at)] = watcher.execute(
            "SELECT started_at, finished_at FROM executions WHERE id = ?", (from_text(quick),)).fetchall()
        assert started_at is not None
        if finished_at - started_at < STARTED_AFTER:
            assert _written(watcher, quick) == ["resolved"]
        else:   # a stalled machine: its start fell due, and was written if a flush came in time
            assert _written(watcher, quick) in (["resolved"], ["started", "resolved"])

        held = post_json(running, "/held", {}).json()["execution_id"]
        wait_until_started(running, held)    # its call is held: "started" is written while it waits
        long_call.set()
        assert wait_for_execution(running, held)["status"] == "resolved"
        assert _written(watcher, held) == ["started", "resolved"]
    finally:
        quick_call.set()
        long_call.set()
        watcher.close()


def test_records_keep_a_start_back_until_it_is_due_and_a_final_status_takes_its_time():
    records = Records()
    records.change(Final(b"a", Status.STARTED, 100.0))
    records.change(Final(b"b", Status.STARTED, 101.0))
    assert not records and len(records) == 0   # nothing to write yet

    records.change(Final(b"a", Status.RESOLVED, None, 100.2))
    assert records.finals[b"a"].started_at == 100.0 and b"a" not in records.starts

    records.due(100.0 + STARTED_AFTER)          # b started after that: still kept back
    assert list(records.finals) == [b"a"] and list(records.starts) == [b"b"]
    records.due(101.0)
    assert records.finals[b"b"].status == Status.STARTED and not records.starts

    records.change(Final(b"b", Status.FAILED, None, 102.0, "boom"))   # after its start was written
    assert records.finals[b"b"].status == Status.FAILED and records.finals[b"b"].started_at == 101.0
