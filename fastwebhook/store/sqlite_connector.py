"""The SQLite connector: one file in WAL mode, one aiosqlite connection, public calls only.

`synchronous=FULL` makes a commit survive power loss, which is what `durability = "commit"`
promises for the intake.  One connection means one transaction at a time: `transaction()`
holds a lock across its statements so nothing else lands inside it.  A group commit's append
is one autocommit statement: one thread crossing (`insert_alone`), one transaction.

The WAL is checkpointed by a second connection on its own thread (`checkpoint`, called every
half second), not by whichever commit happens to cross the autocheckpoint size: on the
committing connection the checkpoint is the acknowledgements' latency tail.

Collection writes run on a third connection, as do the work's records (statuses, jobs,
request-log lines: `write_apart`, a batch in one crossing), and reads that are not the intake's
(collection queries, the admin API's) on read-only ones (WAL: readers wait for no writer), each
on a thread of its own.  On those two every collection statement and read has a time budget
(`[storage] statement_timeout`, `StatementBudget` in sqlite_effects.py); the intake's connection
has none: an append is never interrupted.  The processes of one server take turns writing, and
a server marks the file it serves, by file locks beside it (sqlite_locks.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Callable

import aiosqlite

from ..core.errors import StoreError
from .base import StatementTimeout
from .sql import queries
from .sqlite_effects import StatementBudget, Stopped, write_batch, write_rows
from .sqlite_locks import ServedMark, WriterLock

CACHE_KIB = 16384
# Collection writes: a row and its unique indexes each; their pages seldom come back.
EFFECTS_CACHE_KIB = 4096
WAL_ATTEMPTS = 250           # 20 ms apart: 5 s
READERS = 2                  # read-only connections for reads that are not the intake's


@contextmanager
def _wrapped(what: str):
    """The connector's one exception wrapper: SQLite's errors become StoreError."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite {what} failed: {exc}") from exc
    except ValueError as exc:  # aiosqlite on a closed connection
        raise StoreError(f"SQLite {what} failed: {exc}") from exc


class SqliteConnector:
    dialect = "sqlite"
    max_params = 500     # per IN (...) list

    def __init__(self, path: str, *, synchronous: str = "FULL", shared: bool = False,
                 statement_timeout: float = 0.25):
        self.path = path
        self.synchronous = synchronous
        self.shared = WriterLock(f"{path}-writer") if shared and path != ":memory:" else None
        self.served = ServedMark(path)
        self.sql = queries(self.dialect)
        self._db: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()
        # Collection writes with their jobs: a plain sqlite3 connection on a thread of its own,
        # so a whole batch is one crossing (aiosqlite crosses per statement).
        self._effects_thread: ThreadPoolExecutor | None = None
        self._effects_db: sqlite3.Connection | None = None
        self._effects_budget = StatementBudget(statement_timeout)
        # Reads that are not the intake's: read-only connections on threads of their own, so a
        # long one holds up neither the intake nor the collection writes (nor, READERS being
        # two, every other read).
        self.statement_timeout = statement_timeout
        self._readers: ThreadPoolExecutor | None = None
        self._reader = threading.local()     # each reader thread's connection and budget
        self._reader_dbs: list[tuple[sqlite3.Connection, StatementBudget]] = []

    async def open(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot make the folder of {self.path}: {exc.strerror}") from exc
        with _wrapped(f"open of {self.path}"):
            self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=10.0)
            await self._wal()
            await self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            await self._db.execute("PRAGMA busy_timeout=10000")
            await self._db.execute("PRAGMA temp_store=MEMORY")   # the claim's staging tables
            tables = {row[0] for row in await self._db.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "executions" in tables and "intake" not in tables:
                raise StoreError(f"{self.path} was written by an earlier fastwebhook (before the log-first "
                                 "intake); move it aside, or drain it with that version first")
            await self._db.executescript(self.sql["schema"])
            await self._db.executescript(self.sql["claim_temp"])
            await self._db.executescript(self.sql["record_temp"])
            # The claim's index inserts (a random dedup key each) mostly stay in memory: 16 MiB of pages.
            await self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            if self.path != ":memory:":
                await self._db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None, timeout=10.0)
        self._effects_thread = ThreadPoolExecutor(1, thread_name_prefix="fastwebhook-effects")
        await self._on_effects_thread(self._open_effects)
        if self.path != ":memory:":
            self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="fastwebhook-reader")

    async def _wal(self) -> None:
        """journal_mode=WAL, tried again for a while: two processes opening a new file at once
        each try to switch it, and the loser is told "database is locked" at once (that switch
        does not wait on the busy handler)."""
        for attempt in range(WAL_ATTEMPTS):
            try:
                await self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.02)

    def _open_effects(self) -> None:
        if self.path == ":memory:":
            return
        with _wrapped(f"open of {self.path} for collection writes"):
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")   # rebuildable from the FULL intake, as records are
            db.execute("PRAGMA busy_timeout=10000")
            db.execute(f"PRAGMA cache_size=-{EFFECTS_CACHE_KIB}")
            self._effects_budget.watch(db)
            self._effects_db = db

    def _open_reader(self) -> tuple[sqlite3.Connection, StatementBudget]:
        """This reader thread's connection, opened at its first read."""
        with _wrapped(f"open of {self.path} for reads"):
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
            db.execute("PRAGMA busy_timeout=10000")
        budget = StatementBudget(self.statement_timeout)
        budget.watch(db)
        self._reader.db, self._reader.budget = db, budget
        self._reader_dbs.append((db, budget))
        return db, budget

    async def _on_effects_thread(self, fn: Callable, *args) -> Any:
        if self._effects_thread is None:
            raise StoreError("the store is not open")
        if self.path == ":memory:" and fn != self._open_effects:
            # a second connection to :memory: is a second, empty database
            raise StoreError("collections need a database file; an in-memory store has none to share")
        return await asyncio.get_running_loop().run_in_executor(self._effects_thread, fn, *args)

    async def apply_effects(self, effects: list, insert_job: str) -> list:
        """Each effect's writes and its job row, in one transaction for the batch: an effect
        that fails (a unique constraint) is rolled back alone and its slot in the answer holds
        the error (the batch is then written again with a savepoint per effect, two statements
        each that the common batch, where all go in, is spared).  Our other connection's writes are held back meanwhile, so
        the two never wait on SQLite's busy handler (which sleeps in steps of milliseconds).

        What the intake's append may wait for is bounded by the statement budget: each effect
        runs within it (one past it is stopped, which rolls the transaction back: the batch is
        written again without it, its slot holding the StatementTimeout), and a batch goes in
        parts of about one budget each, the store let go between them."""
        outcomes: list = []
        stopped: dict[int, StatementTimeout] = {}
        while len(outcomes) < len(effects):
            async with self._writing():
                try:
                    outcomes += await self._on_effects_thread(self._apply_effects, effects, len(outcomes),
                                                              stopped, insert_job)
                except Stopped as over:
                    stopped[over.index] = over.timeout
        return outcomes

    @property
    def apart(self) -> bool:
        """Whether writes may go on the collection writes' connection (`write_apart`): a file's
        (a second connection to :memory: is another, empty database)."""
        return self.path != ":memory:"

    async def write_apart(self, statements: list[tuple[str, list[tuple]]]) -> None:
        """Each statement for each of its rows, in one transaction on the collection writes'
        connection (`write_rows`): one thread crossing, where the intake's (aiosqlite, a
        crossing per statement) needs the rows staged in TEMP tables and a script to copy them
        (~0.8 of the cost without the staging)."""
        async with self._writing():
            await self._on_effects_thread(self._write_rows, statements)

    def _write_rows(self, statements: list[tuple[str, list[tuple]]]) -> None:
        with _wrapped("write"):
            write_rows(self._effects_db, statements)

    def _apply_effects(self, effects: list, start: int, stopped: dict, insert_job: str) -> list:
        with _wrapped("collection write"):
            return write_batch(self._effects_db, self._effects_budget, effects, start, stopped, insert_job)

    async def read_alone(self, sql: str, params: tuple = ()) -> list[tuple]:
        """A read on a read-only connection, within the budget (an in-memory store has one
        connection only: the read goes on it)."""
        if self._readers is None:
            if self.path == ":memory:":
                return await self.fetch(sql, params)
            raise StoreError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, sql, params)

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        db, budget = getattr(self._reader, "db", None), getattr(self._reader, "budget", None)
        if db is None:
            db, budget = self._open_reader()
        with _wrapped("read"), budget.running():
            return db.execute(sql, params).fetchall()

    async def run_ddl(self, statements: list[str]) -> None:
        async with self._writing():
            await self._on_effects_thread(self._ddl, statements)

    def _ddl(self, statements: list[str]) -> None:
        with _wrapped("schema change"):
            for statement in statements:
                try:
                    self._effects_db.execute(statement)
                except sqlite3.OperationalError as exc:
                    # another process added that field's column between our look and this
                    if "duplicate column name" not in str(exc):
                        raise

    async def checkpoint(self) -> None:
        """Copy committed WAL pages into the database without blocking writers (PASSIVE), then
        copy what was appended meanwhile with our writes held back: a checkpoint that ends
        with every frame copied lets the next commit start the WAL from its beginning again.
        Under steady writes a PASSIVE one alone never ends so, and the WAL grows without
        bound (and every read of it slows down)."""
        if self._checkpointer is None:
            return
        with _wrapped("checkpoint"):
            await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            async with self._writing():  # only the frames of the last moments are left: short
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- a server on the file (sqlite_locks.ServedMark) ------------------------------------------
    def mark_served(self) -> None:
        self.served.mark()

    def unserved(self):
        """The file held against servers while the block runs; StoreError if one serves it."""
        return self.served.unserved()

    async def close(self) -> None:
        self.served.close()
        self._effects_budget.close()
        if self._readers is not None:
            readers, self._readers = self._readers, None
            readers.shutdown(wait=True)   # a read in flight ends within its budget
            for db, budget in self._reader_dbs:
                budget.close()
                db.close()
            self._reader_dbs.clear()
        if self._effects_thread is not None:
            thread, self._effects_thread = self._effects_thread, None
            if self._effects_db is not None:
                await asyncio.get_running_loop().run_in_executor(thread, self._effects_db.close)
                self._effects_db = None
            thread.shutdown(wait=True)
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            with _wrapped("close"):
                await checkpointer.close()
        if self._db is not None:
            async with self.lock:
                db, self._db = self._db, None
                with _wrapped("close"):
                    await db.close()
        if self.shared is not None:
            self.shared.close()

    @asynccontextmanager
    async def _writing(self):
        """Our writes one at a time (`lock`), and, with several processes on the file, theirs
        too (`shared`, a file lock: the next writer is woken the moment one is done, where
        SQLite's busy handler would have it sleep and try again, up to 100 ms a time)."""
        async with self.lock:
            if self.shared is None:
                yield
                return
            await self.shared.acquire()
            try:
                yield
            finally:
                self.shared.release()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def execute(self, sql: str, params: tuple = ()) -> int:
        """Run one statement; returns the rows it changed."""
        # Cursors are not closed: that would be one more thread crossing, and a finished
        # statement holds nothing (the garbage collector closes them).
        with _wrapped("write"):
            return (await self._connection().execute(sql, params)).rowcount

    async def fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        with _wrapped("read"):
            return list(await self._connection().execute_fetchall(sql, params))

    @asynccontextmanager
    async def _relaxed(self):
        """The connection with synchronous=NORMAL for what runs inside (see `transaction`),
        FULL again afterwards whatever happened: an append never commits without FULL."""
        db = self._connection()
        relax = self.synchronous == "FULL"
        if relax:
            with _wrapped("relaxing synchronous"):
                await db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield db
        finally:
            if relax:  # a failure here is loud
                with _wrapped("restoring synchronous=FULL"):
                    await db.execute("PRAGMA synchronous=FULL")

    @asynccontextmanager
    async def transaction(self):
        """BEGIN IMMEDIATE takes the write lock up front, so two processes never deadlock
        upgrading a read; any failure rolls the whole transaction back.

        Only the intake's append needs `synchronous=FULL`: everything a transaction writes (claims,
        statuses, jobs, the request log) can be rebuilt from the intake, so it commits with NORMAL
        (safe from a crash; power loss may take the last ones, which then run again) and does not
        keep the appends behind it waiting for an fsync.  The next FULL commit syncs it anyway."""
        async with self._writing(), self._relaxed() as db:
            try:  # BEGIN inside: a cancel while it runs still rolls back what it began
                with _wrapped("begin"):
                    await db.execute("BEGIN IMMEDIATE")
                yield self
                with _wrapped("commit"):
                    await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise

    async def stage(self, clear: str, inserts: list[tuple[str, list[tuple]]]) -> None:
        """Empty and fill TEMP tables (this connection's own: no database lock is taken).  The
        lock is held per statement, not across them: an append may go between two (it touches
        no TEMP table), so it never waits for the loop turns a staging of several takes.  Two
        stagings of the same tables must not overlap: the claims and the records each have
        their own tables, and one task makes each."""
        db = self._connection()
        with _wrapped("staging"):
            async with self.lock:
                await db.executescript(clear)
            for sql, rows in inserts:
                if rows:
                    async with self.lock:
                        await db.executemany(sql, rows)

    async def script(self, sql: str) -> None:
        """Several statements (their own BEGIN ... COMMIT) in one thread crossing, with nothing
        of ours in between, `synchronous` relaxed inside the same crossing (see `transaction`);
        rolled back if one fails."""
        async with self._writing():
            db = self._connection()
            relax = self.synchronous == "FULL"
            try:
                with _wrapped("write"):
                    # (the lone ";" ends a script whose last statement has none)
                    await db.executescript(f"PRAGMA synchronous=NORMAL;\n{sql}\n;\nPRAGMA synchronous=FULL;"
                                           if relax else sql)
            except BaseException:
                # Whatever happened, the lock is not let go with a transaction open or at NORMAL:
                # the next append would land in it, or commit without an fsync.  Both are queued
                # behind the script on the connection's thread, so they run after it even when a
                # cancel reached us while it ran; and a cancel during the ROLLBACK still restores.
                try:
                    await _rollback(db)
                finally:
                    if relax:
                        with _wrapped("restoring synchronous=FULL"):
                            await db.execute("PRAGMA synchronous=FULL")
                raise

    async def script_reading(self, sql: str, query: str) -> list[tuple]:
        """`script` whose transaction (begun by `sql`, left open) reads `query`'s rows before
        its COMMIT: what was written and what was read commit together, or neither does."""
        async with self._writing(), self._relaxed() as db:
            try:
                with _wrapped("write"):
                    await db.executescript(sql)
                    rows = list(await db.execute_fetchall(query))
                    await db.execute("COMMIT")
                return rows
            except BaseException:
                await _rollback(db)   # (unconditional: see `script`)
                raise

    async def insert_alone(self, sql: str, params: tuple) -> int:
        """One autocommit INSERT, outside any transaction: one thread crossing, one commit
        (a group commit's append).  Returns the new row's id."""
        async with self._writing():
            with _wrapped("append"):
                return (await self._connection().execute(sql, params)).lastrowid


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute("ROLLBACK")
    except (sqlite3.Error, ValueError):  # nothing to roll back, or the connection is gone
        pass
