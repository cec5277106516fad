"""Collection writes on SQLite, on the effects connection's own thread: a batch of effects (a
node's writes and its job row each) in one transaction, an effect that fails undone alone, each
within the statement budget (a watchdog that interrupts a statement past it); and, on the same
thread, the work's records (`write_rows`)."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from typing import Any, Callable

from ..core.errors import ConstraintError, StoreError
from .base import StatementTimeout


def write_batch(db: sqlite3.Connection, budget: StatementBudget, effects: list, start: int, stopped: dict,
                insert_job: str) -> list:
    """The effects from `start` on, in one transaction, until about one budget has passed.  A
    batch of new rows alone goes in at once (`_insert_all`); any other goes in as it comes
    (almost always every effect does); if one is refused (a constraint), again with each effect
    under a savepoint, its slot holding the error.  One past the budget raises Stopped (SQLite
    rolled the transaction back); `stopped` holds those already stopped, whose slots keep their
    StatementTimeout."""
    if start == 0 and not stopped:
        outcomes = _insert_all(db, budget, effects, insert_job)
        if outcomes is not None:
            return outcomes
    db.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes = _write_part(db, budget, effects, start, stopped, insert_job, _write_one)
        except Refused:
            db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")
            outcomes = _write_part(db, budget, effects, start, stopped, insert_job, _apply_one)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:   # (a write the budget stopped has rolled it back already)
            db.execute("ROLLBACK")
        raise
    return outcomes


def write_rows(db: sqlite3.Connection, statements: list[tuple[str, list[tuple]]]) -> None:
    """Each statement for each of its rows (executemany), in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in statements:
            if rows:
                db.executemany(sql, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


MAX_ROWID = (1 << 63) - 1


class _NotAtOnce(Exception):
    """The batch cannot go in at once: it goes in effect by effect."""


def _insert_all(db: sqlite3.Connection, budget: StatementBudget, effects: list, insert_job: str) -> list | None:
    """A batch whose every effect inserts one new row and reads it back (a cohort's creates):
    one executemany per insert statement and one for the job rows, the rows known as written
    (NewRow), ids handed out as SQLite would (one past the largest), all within one budget:
    six tenths of the cost of a statement each with RETURNING.  None, with nothing written, when
    the batch is not such or anything refuses it (a unique constraint, the budget): it then
    goes in effect by effect, which finds the culprit."""
    groups: list[list] = []   # effects one after another with the same insert: one executemany each
    for effect in effects:
        writes = effect.writes
        if len(writes) != 1 or writes[0].new_row is None or effect.shape != "row" or effect.finish is None \
                or any(value != value for value in writes[0].params):   # NaN: SQLite stores NULL
            return None
        if groups and groups[-1][0].writes[0].new_row.sql == writes[0].new_row.sql:
            groups[-1].append(effect)
        else:
            groups.append([effect])
    rows: list = []
    db.execute("BEGIN IMMEDIATE")
    try:
        with budget.running():
            for group in groups:
                new_row = group[0].writes[0].new_row
                last = db.execute(new_row.last_id).fetchone()[0] or 0
                if last + len(group) > MAX_ROWID:   # SQLite would pick ids at random: let it
                    raise _NotAtOnce()
                values = []
                for row_id, effect in enumerate(group, start=last + 1):
                    params = effect.writes[0].params
                    rows.append(new_row.row(row_id, params))
                    values.append((row_id, *params))
                db.executemany(new_row.sql, values)
            outcomes = [effect.finish(row) for effect, row in zip(effects, rows)]
            db.executemany(insert_job, [_job_params(effect, outcome) for effect, outcome in zip(effects, outcomes)])
        db.execute("COMMIT")
    except Exception:  # noqa: BLE001 - nothing of it is kept; effect by effect tells what failed
        if db.in_transaction:
            db.execute("ROLLBACK")
        return None
    return outcomes


def _job_params(effect, result) -> tuple:
    job = effect.job
    return (job.execution, job.position, job.node, job.type, job.status, effect.encode(result), job.error,
            job.logs, job.duration_ms)


def _write_part(db: sqlite3.Connection, budget: StatementBudget, effects: list, start: int, stopped: dict,
                insert_job: str, write: Callable) -> list:
    """The effects from `start` on, until about one budget has passed (at least one)."""
    ends = time.monotonic() + budget.seconds
    outcomes = []
    for index in range(start, len(effects)):
        if index in stopped:
            outcomes.append(stopped[index])
        else:
            try:
                with budget.running():
                    outcomes.append(write(db, effects[index], insert_job))
            except StatementTimeout as exc:
                raise Stopped(index, exc) from None
        if time.monotonic() > ends:
            break
    return outcomes


# Primary result codes that mean the database, not one statement, is in trouble.
_CONNECTION_ERRORS = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 26})   # BUSY LOCKED NOMEM READONLY IOERR CORRUPT FULL CANTOPEN NOTADB


class Refused(Exception):
    """An effect of a batch written without savepoints failed by itself (a constraint)."""


class Stopped(Exception):
    """The effect at `index` ran past the budget; SQLite rolled its transaction back."""

    def __init__(self, index: int, timeout: StatementTimeout):
        super().__init__(index)
        self.index, self.timeout = index, timeout


class StatementBudget:
    """How long a statement on one connection may run.  A watchdog thread interrupts the
    connection (sqlite3's `interrupt()`, made to be called from another thread) once the
    deadline `running()` set has passed; SQLite stops the statement at its next row.  The
    deadline is cleared under the lock the watchdog takes, so an interrupt never reaches a
    statement still within its budget.  (A progress handler counts steps of SQLite's virtual
    machine, not time: a LIKE over a large value is one step, and 120 such rows did not reach
    100,000 steps in 2 s; called more often, it takes the GIL from the event loop per row.)"""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = math.inf
        self._lock = threading.Lock()
        self._busy = threading.Event()    # set while a deadline may be pending: the watchdog ticks
        self._db: sqlite3.Connection | None = None

    def watch(self, db: sqlite3.Connection) -> None:
        self._db = db
        threading.Thread(target=self._watch, name="fastwebhook-budget", daemon=True).start()

    def close(self) -> None:
        self._db = None
        self._busy.set()

    def _watch(self) -> None:
        tick = self.seconds / 8
        while True:
            self._busy.wait()
            with self._lock:
                db = self._db
                if db is None:
                    return
                if self.deadline == math.inf:
                    self._busy.clear()   # idle until the next statement
                    continue
                if time.monotonic() > self.deadline:
                    db.interrupt()
                    self.deadline = math.inf
            time.sleep(tick)

    def running(self) -> "StatementBudget":
        """`with budget.running():` one statement (or an effect's few) within the budget; one
        stopped raises StatementTimeout.  (A class, not a generator: it runs per effect.)"""
        return self

    def __enter__(self) -> None:
        with self._lock:
            self.deadline = time.monotonic() + self.seconds
            if not self._busy.is_set():   # (the watchdog clears it only under the lock)
                self._busy.set()

    def __exit__(self, kind, exc, traceback) -> None:
        with self._lock:
            self.deadline = math.inf
        if isinstance(exc, sqlite3.OperationalError) and interrupted(exc):
            raise StatementTimeout(self.seconds) from None


def interrupted(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_INTERRUPT


def _write_one(db: sqlite3.Connection, effect, insert_job: str):
    """One effect and its job row; an error of the database itself fails the batch, any other
    raises Refused (the batch is then written again, with savepoints: _apply_one)."""
    raw: Any = None
    changed = 0
    try:
        for write in effect.writes:
            cursor = db.execute(write.sql, write.params)
            if effect.shape == "row":
                raw = cursor.fetchone()
                cursor.fetchall()
            elif effect.shape == "rows":
                raw = cursor.fetchall()
            changed += max(cursor.rowcount, 0)
        given = raw if effect.shape in ("row", "rows") else changed if effect.shape == "count" else None
        result = effect.finish(given) if effect.finish is not None else None
        db.execute(insert_job, _job_params(effect, result))
    except sqlite3.DatabaseError as exc:
        if not isinstance(exc, sqlite3.IntegrityError) and getattr(exc, "sqlite_errorcode", None) is not None \
                and exc.sqlite_errorcode & 0xFF in _CONNECTION_ERRORS:
            raise   # the database itself is in trouble: the batch fails, and says so
        if interrupted(exc):
            raise   # past the budget: the transaction is gone, the batch is written again without it
        raise Refused() from exc
    except Exception as exc:  # noqa: BLE001 - the node's own finish failed
        raise Refused() from exc
    return result


def _apply_one(db: sqlite3.Connection, effect, insert_job: str):
    """One effect under its own savepoint: one that fails is undone alone, its slot in the
    answer holding the error."""
    db.execute("SAVEPOINT effect")
    try:
        result = _write_one(db, effect, insert_job)
        db.execute("RELEASE effect")
        return result
    except Refused as refused:
        _undo(db)
        exc = refused.__cause__
        if isinstance(exc, sqlite3.IntegrityError):
            return ConstraintError(str(exc))
        if isinstance(exc, sqlite3.DatabaseError):
            return StoreError(f"SQLite refused the write: {exc}")   # this statement alone (a LIKE too complex)
        return exc
    except BaseException:
        if db.in_transaction:   # (a write the budget stopped has rolled it back already)
            _undo(db)
        raise


def _undo(db: sqlite3.Connection) -> None:
    db.execute("ROLLBACK TO effect")
    db.execute("RELEASE effect")
