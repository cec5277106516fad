"""What one collection statement may cost (issue 18, item 4), through the real server on real
SQLite: a LIKE pattern is bounded in length, a statement past `[storage] statement_timeout` is
stopped and fails its node (or its admin request, 400), and neither holds up the intake's
append (an unrelated webhook's 202) nor another execution's collection write."""

from __future__ import annotations

import sqlite3
import threading
import time
from urllib.parse import quote

import orjson

from client_support import ADMIN, post_json, request, run_to_end

CONFIG_TEMPLATE = """
[server]
listen = ["127.0.0.1:0"]
[storage]
url = "sqlite:///{db}"
statement_timeout = "{timeout}"
[log]
level = "warning"
[admin]
token = "test-token"

[collections.notes]
fields = { body = "text" }

[workflows.purge]
[[workflows.purge.nodes]]
key = "drop"
type = "destroy"
collection = "notes"
filter = { body = { like = "{{$context.data.pattern}}" } }

[workflows.note]
[[workflows.note.nodes]]
key = "add"
type = "create"
collection = "notes"
values = { body = "{{$context.data.body}}" }

[workflows.other]
"""

CONFIG = CONFIG_TEMPLATE.replace("{timeout}", "50ms")

# 102 characters: within the length bound, yet against 100 KB of 'a' each row costs ~17 ms
# (the literal run is compared at every position), so 120 rows take ~2 s unbounded.
SLOW_PATTERN = "%" + "a" * 100 + "b"


def fill(running, rows: int, size: int) -> None:
    """`rows` records of `size` letters 'a', written straight into the collection's table."""
    with sqlite3.connect(running.db) as db:
        db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                   "INSERT INTO records_notes (body, created_at, updated_at) "
                   "SELECT replace(hex(zeroblob(?)), '0', 'a'), '', '' FROM n", (rows, size // 2))


def slowest_ack_while(running, busy) -> float:
    """Posts to the unrelated workflow, one after another, for as long as `busy()` holds:
    the longest any of them waited for its 202."""
    waits: list[float] = []
    done = threading.Event()

    def post_meanwhile():
        while not done.is_set():
            started = time.monotonic()
            answer = post_json(running, "/api/webhooks/other", {})
            waits.append(time.monotonic() - started)
            assert answer.status == 202

    poster = threading.Thread(target=post_meanwhile)
    poster.start()
    try:
        busy()
    finally:
        done.set()
        poster.join(10)
    assert waits
    return max(waits)


def test_a_long_like_pattern_fails_its_node_and_runs_no_statement(serve):
    running = serve(CONFIG)
    fill(running, 1, 300_000)   # one large record: 3,000 characters against it took ~1.6 s
    box = {}

    def destroy():
        box["execution"] = run_to_end(running, "/api/webhooks/purge", {"pattern": "%" + "a" * 2998 + "b"})

    slowest = slowest_ack_while(running, destroy)
    execution = box["execution"]
    assert execution["status"] == "failed"
    assert "like pattern may be at most 128 characters, not 3000" in execution["error"], execution["error"]
    assert slowest < 0.5


def test_a_statement_past_the_budget_fails_its_node_and_the_intake_goes_on(serve):
    running = serve(CONFIG)
    fill(running, 120, 100_000)
    box = {}

    def destroy():
        box["execution"] = run_to_end(running, "/api/webhooks/purge", {"pattern": SLOW_PATTERN})

    slowest = slowest_ack_while(running, destroy)
    execution = box["execution"]
    assert execution["status"] == "failed"
    assert "ran past storage.statement_timeout (50 ms) and was stopped" in execution["error"], execution["error"]
    assert slowest < 0.5    # the statement alone would hold the store ~2 s
    with sqlite3.connect(running.db) as db:
        assert db.execute("SELECT count(*) FROM records_notes").fetchone() == (120,)
    # the collection writes go on after it
    assert run_to_end(running, "/api/webhooks/note", {"body": "after"})["status"] == "resolved"


def records_query(running, pattern: str):
    filter = quote(orjson.dumps({"body": {"like": pattern}}).decode())
    return request(running, "GET", f"/api/admin/collections/notes/records?filter={filter}", headers=ADMIN)


def test_an_admin_query_with_a_long_pattern_is_refused(serve):
    running = serve(CONFIG)
    answer = records_query(running, "%" + "a" * 8190 + "b")
    assert answer.status == 400
    assert "like pattern may be at most 128 characters, not 8192" in answer.json()["error"]


def test_an_admin_query_past_the_budget_is_stopped_and_holds_up_no_create(serve):
    running = serve(CONFIG_TEMPLATE.replace("{timeout}", "300ms"))
    fill(running, 120, 100_000)
    answered = {}

    def query():
        answered["answer"] = records_query(running, SLOW_PATTERN)
        answered["at"] = time.monotonic()

    reader = threading.Thread(target=query)
    reader.start()
    created = run_to_end(running, "/api/webhooks/note", {"body": "meanwhile"})
    created_at = time.monotonic()
    reader.join(10)
    assert created["status"] == "resolved"
    # the read runs on a connection of its own: the create, written while it ran, did not
    # queue behind it
    assert created_at < answered["at"]
    answer = answered["answer"]
    assert answer.status == 400, answer.body
    assert "ran past storage.statement_timeout (300 ms) and was stopped" in answer.json()["error"]
