"""A batch of creates on SQLite goes in at once (one executemany per insert, ids handed out as
SQLite would, the rows known as written), and each result is the row exactly as the table holds
it; a batch that cannot go in so (a refused row, a value SQLite stores otherwise, an upsert) goes
in effect by effect, each insert reading its row back."""

from __future__ import annotations

import math
import sqlite3

from fastwebhook.core.errors import ConstraintError
from fastwebhook.store.rows import Effect, Job, encode_result
from fastwebhook.store.sql import queries
from fastwebhook.store.sqlite_effects import StatementBudget, write_batch
from fastwebhook.workflow.collections import Collection

EVENTS = Collection("events", {"key": "string", "count": "integer", "score": "number", "seen": "boolean",
                               "extra": "json", "at": "datetime", "note": "text"}, (("key",),))
INSERT_JOB = queries("sqlite")["insert_job"]


def database(tmp_path) -> tuple[sqlite3.Connection, list[str], StatementBudget]:
    """The store's schema and the collection's table on a real file, every statement traced."""
    db = sqlite3.connect(str(tmp_path / "rows.db"), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(queries("sqlite")["schema"])
    for statement in EVENTS.ddl():
        db.execute(statement)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    budget = StatementBudget(5.0)
    budget.watch(db)
    return db, statements, budget


def creates(values: list[dict], upsert_on: tuple[str, ...] = ()) -> list[Effect]:
    return [Effect([EVENTS.insert(row, upsert_on)], "row",
                   Job(n.to_bytes(16, "big"), 0, "add", "create", "resolved", None, None, None, 1.0), EVENTS.decode)
            for n, row in enumerate(values)]


def stored(db: sqlite3.Connection) -> list[dict]:
    listed = ", ".join(f'"{c}"' for c in EVENTS.columns)
    return [EVENTS.decode(row) for row in db.execute(f'SELECT {listed} FROM "records_events" ORDER BY id')]


def job_results(db: sqlite3.Connection) -> list[bytes]:
    return [row[0] for row in db.execute("SELECT result FROM jobs ORDER BY seq")]


def test_a_batch_of_new_rows_goes_in_at_once_and_each_result_is_the_row_as_stored(tmp_path):
    db, statements, budget = database(tmp_path)
    write_batch(db, budget, creates([{"key": f"old-{n}"} for n in range(5)]), 0, {}, INSERT_JOB)
    db.execute("DELETE FROM \"records_events\" WHERE key IN ('old-2', 'old-4')")   # the largest id is gone
    before = len(job_results(db))
    statements.clear()
    values = [{"key": f"k-{n}", "count": str(n), "score": n / 4, "seen": n % 2 == 0, "extra": {"n": [n, None]},
               "at": "2026-12-06T18:00:00Z"} for n in range(40)]
    values[7] = {"note": 12, "key": "k-7"}              # other fields, in another order; the rest NULL
    values[9] = {"key": "k-9", "score": 3, "seen": "false", "count": 10 ** 12}

    outcomes = write_batch(db, budget, creates(values), 0, {}, INSERT_JOB)

    assert not [s for s in statements if "RETURNING" in s]   # nothing read back: the rows were known
    rows = stored(db)
    assert [row["key"] for row in rows] == ["old-0", "old-1", "old-3"] + [f"k-{n}" for n in range(40)]
    assert outcomes == rows[3:]                           # each result is its row as the table holds it
    assert [row["id"] for row in outcomes] == list(range(5, 45))   # one past the largest, as SQLite gives
    assert outcomes[9]["score"] == 3.0 and isinstance(outcomes[9]["score"], float) and outcomes[9]["seen"] is False
    assert outcomes[7]["note"] == "12" and outcomes[7]["count"] is None and outcomes[2]["extra"] == {"n": [2, None]}
    assert job_results(db)[before:] == [encode_result(outcome) for outcome in outcomes]


def test_a_refused_row_sends_the_batch_effect_by_effect_and_fails_alone(tmp_path):
    db, statements, budget = database(tmp_path)
    values = [{"key": f"k-{n}"} for n in range(30)]
    values[20]["key"] = "k-3"

    outcomes = write_batch(db, budget, creates(values), 0, {}, INSERT_JOB)

    assert isinstance(outcomes[20], ConstraintError) and "UNIQUE" in str(outcomes[20])
    rows = stored(db)
    assert [row["key"] for row in rows] == [f"k-{n}" for n in range(30) if n != 20]   # none twice
    assert [o for n, o in enumerate(outcomes) if n != 20] == rows
    assert len(job_results(db)) == 29
    assert [s for s in statements if "RETURNING" in s]   # read back, one by one


def test_a_value_sqlite_stores_otherwise_goes_in_effect_by_effect(tmp_path):
    db, statements, budget = database(tmp_path)
    outcomes = write_batch(db, budget, creates([{"key": "a", "score": 1.5}, {"key": "b", "score": math.nan}]),
                           0, {}, INSERT_JOB)
    assert outcomes == stored(db) and outcomes[1]["score"] is None   # SQLite holds NaN as NULL
    assert [s for s in statements if "RETURNING" in s]


def test_upserts_read_back_the_row_the_table_holds(tmp_path):
    db, statements, budget = database(tmp_path)
    write_batch(db, budget, creates([{"key": "a", "count": 1, "note": "first"}]), 0, {}, INSERT_JOB)
    outcomes = write_batch(db, budget, creates([{"key": "a", "count": 2}, {"key": "b", "count": 3}], ("key",)),
                           0, {}, INSERT_JOB)
    assert outcomes == stored(db)
    assert outcomes[0]["id"] == 1 and outcomes[0]["count"] == 2 and outcomes[0]["note"] == "first"
    assert [s for s in statements if "RETURNING" in s]
