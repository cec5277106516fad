"""The PostgreSQL connector (asyncpg): the pools, the schema and its migrations, and the
statements whose shape differs here.

- collections' statements (collections.py writes `?`) get numbered placeholders;
- collection statements and the reads that are not the intake's run on a pool of their own,
  whose connections carry `statement_timeout` (`[storage] statement_timeout`): one past it is
  cancelled by the server, and the intake's statements have no such bound.

The schema is versioned (`migration_N` blocks, applied in order at start under an advisory lock,
so hosts starting together apply each once).  `?schema=NAME` in the URL keeps the tables in
that schema (made if missing).
"""

from __future__ import annotations

import itertools
import re
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg

from ..core.errors import ConstraintError, StoreError
from .base import StatementTimeout
from .rows import TRANSITIONS
from .sql import queries

MIGRATION_LOCK = 0x66776862    # pg_advisory_lock key: "fwhb"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
POOL_SIZE = 8
BOUNDED_POOL_SIZE = 4   # collection writes (one batch at a time) and reads beside the intake's
APPLICATION = "fastwebhook"     # pg_stat_activity's application_name of every connection


@contextmanager
def _wrapped(what: str):
    """asyncpg's errors (and a database that cannot be reached) become StoreError."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"PostgreSQL {what} failed: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise StoreError(f"PostgreSQL {what} failed: cannot reach the server ({exc})") from exc


def _rows(records) -> list[tuple]:
    return [tuple(record) for record in records]


class _Session:
    """One connection's statements (inside a transaction: `PostgresConnector.transaction`)."""

    def __init__(self, connection: asyncpg.Connection):
        self.connection = connection

    async def fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        with _wrapped("read"):
            return _rows(await self.connection.fetch(sql, *params))

    async def execute(self, sql: str, params: tuple = ()) -> int:
        with _wrapped("write"):
            status = await self.connection.execute(sql, *params)
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def copy_in(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Rows into one of the connection's temporary tables (the `claim_staging` kind), by COPY."""
        with _wrapped("write"):
            await self.connection.copy_records_to_table(table, records=rows, columns=columns, schema_name="pg_temp")


class PostgresConnector:
    dialect = "postgres"

    def __init__(self, url: str, *, statement_timeout: float = 0.25):
        self.statement_timeout = statement_timeout
        parts = urlsplit(url)
        options = parse_qs(parts.query, keep_blank_values=True)
        self.schema = options.pop("schema", [None])[0]
        if self.schema is not None and not _SCHEMA.match(self.schema):
            raise StoreError(f"storage.url: schema must be lower-case letters, digits and '_', not {self.schema!r}")
        query = urlencode(options, doseq=True)
        self.dsn = urlunsplit(parts._replace(scheme="postgresql", query=query))
        where = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        self.display = urlunsplit(parts._replace(netloc=where, query=""))   # no user, no password
        self.sql = queries(self.dialect)
        self.pool: asyncpg.Pool | None = None
        self.bounded: asyncpg.Pool | None = None    # connections with statement_timeout set
        self._listener: asyncpg.Connection | None = None
        self._callbacks: dict[str, object] = {}

    async def open(self) -> None:
        settings = {"application_name": APPLICATION, **({"search_path": self.schema} if self.schema else {})}
        with _wrapped(f"connection to {self.display}"):
            if self.schema:   # before the pool: its connections look for their tables there
                connection = await asyncpg.connect(self.dsn, timeout=10)
                try:   # under the migrations' lock: two hosts creating one schema at once collide
                    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
                    await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await connection.close()
            self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=POOL_SIZE, timeout=10,
                                                  server_settings=settings, init=self._staging)
            timeout = max(1, round(self.statement_timeout * 1000))   # milliseconds
            # statement_timeout counts a wait for another host's row lock too: lock_timeout ends
            # such a wait first, as a conflict that passes (the batch is tried again), so the
            # budget fails only a statement that itself runs long.
            self.bounded = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=BOUNDED_POOL_SIZE, timeout=10,
                server_settings={**settings, "statement_timeout": str(timeout),
                                 "lock_timeout": str(max(1, timeout // 2))})
        await self._migrate()

    async def _staging(self, connection: asyncpg.Connection) -> None:
        """A new pool connection's temporary tables, where a claim stages its rows."""
        await connection.execute(self.sql["claim_staging"])

    async def reach(self) -> None:
        """Connect and go (`fastwebhook check`): nothing is created or changed."""
        with _wrapped(f"connection to {self.display}"):
            connection = await asyncpg.connect(self.dsn, timeout=10)
            await connection.close()

    async def listen(self, channel: str, callback) -> None:
        """`callback()` on each NOTIFY on `channel`, over a connection of its own (kept until
        close; one that drops is opened again by `listening`)."""
        with _wrapped(f"LISTEN {channel}"):
            if self._listener is None or self._listener.is_closed():
                self._listener = await asyncpg.connect(self.dsn, timeout=10,
                                                       server_settings={"application_name": APPLICATION})
                self._callbacks.clear()
            self._callbacks[channel] = callback
            await self._listener.add_listener(channel, lambda *_: callback())

    async def listening(self) -> None:
        """The LISTEN connection again, if it dropped (PostgreSQL restarted): called every few
        seconds; meanwhile the polling covers for it."""
        if self._listener is not None and self._listener.is_closed():
            callbacks = dict(self._callbacks)
            for channel, callback in callbacks.items():
                await self.listen(channel, callback)

    async def _migrate(self) -> None:
        """Every `migration_N` not applied yet, in order, one transaction each, with the other
        hosts that start at this moment waiting on the advisory lock."""
        migrations = sorted((int(name.rpartition("_")[2]), sql) for name, sql in self.sql.items()
                            if name.startswith("migration_"))
        with _wrapped("schema migration"):
            async with self.pool.acquire() as connection:
                await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
                try:
                    await connection.execute(self.sql["schema_versions"])
                    version = await connection.fetchval(self.sql["schema_version"])
                    for number, sql in migrations:
                        if number > version:
                            async with connection.transaction():
                                await connection.execute(sql)
                                await connection.execute(self.sql["record_version"], number)
                    before, after = zip(*[(b.value, a.value) for b, afters in TRANSITIONS.items() for a in afters])
                    async with connection.transaction():
                        await connection.execute("DELETE FROM transitions")
                        await connection.execute("INSERT INTO transitions (before, after) "
                                                 "SELECT * FROM unnest($1::text[], $2::text[])", list(before), list(after))
                finally:
                    await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            if not listener.is_closed():
                with _wrapped("close"):
                    await listener.close()
        for name in ("bounded", "pool"):
            pool = getattr(self, name)
            if pool is not None:
                setattr(self, name, None)
                with _wrapped("close"):
                    await pool.close()

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise StoreError("the store is not open")
        return self.pool

    async def fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        with _wrapped("read"):
            return _rows(await self._pool().fetch(sql, *params))

    async def execute(self, sql: str, params: tuple = ()) -> int:
        async with self.transaction() as session:
            return await session.execute(sql, params)

    @asynccontextmanager
    async def transaction(self):
        with _wrapped("transaction"):
            async with self._pool().acquire() as connection, connection.transaction():
                yield _Session(connection)

    async def checkpoint(self) -> None:
        """PostgreSQL keeps its own log: nothing to do."""

    async def run_ddl(self, statements: list[str]) -> None:
        """Under the migrations' lock (for this transaction): hosts and workers starting
        together all create the same collection tables, which PostgreSQL does not let two
        sessions do at once."""
        async with self.transaction() as session:
            await session.execute("SELECT pg_advisory_xact_lock($1)", (MIGRATION_LOCK,))
            for statement in statements:
                await session.execute(statement.replace(" ADD COLUMN ", " ADD COLUMN IF NOT EXISTS ", 1))

    def _bounded(self) -> asyncpg.Pool:
        if self.bounded is None:
            raise StoreError("the store is not open")
        return self.bounded

    async def read_alone(self, sql: str, params: tuple = ()) -> list[tuple]:
        """On the bounded pool: within statement_timeout."""
        try:
            with _wrapped("read"):
                return _rows(await self._bounded().fetch(_numbered(sql), *params))
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.QueryCanceledError):
                raise StatementTimeout(self.statement_timeout) from None
            raise

    async def apply_effects(self, effects: list, insert_job: str) -> list:
        """Each effect's writes and its job row, in one transaction for the batch; when one is
        refused (a unique field taken) the batch is written again with a savepoint per effect,
        and that one's slot holds the error (as on SQLite).  One cancelled by statement_timeout
        is not run again: its slot holds the StatementTimeout."""
        stopped: dict[int, StatementTimeout] = {}
        with _wrapped("collection write"):
            async with self._bounded().acquire() as connection:
                try:
                    async with connection.transaction():
                        outcomes = []
                        for index, effect in enumerate(effects):
                            try:
                                outcomes.append(await _write_one(connection, effect, insert_job))
                            except _Refused as refused:
                                if isinstance(refused.__cause__, asyncpg.QueryCanceledError):
                                    stopped[index] = StatementTimeout(self.statement_timeout)
                                raise
                        return outcomes
                except _Refused:
                    pass
                outcomes = []
                async with connection.transaction():
                    for index, effect in enumerate(effects):
                        if index in stopped:
                            outcomes.append(stopped[index])
                            continue
                        try:
                            async with connection.transaction():   # a savepoint
                                outcomes.append(await _write_one(connection, effect, insert_job))
                        except _Refused as refused:
                            outcomes.append(_refusal(refused.__cause__, self.statement_timeout))
                return outcomes


# Errors of the moment, not of one effect: a deadlock between two hosts' writes, a lock
# timeout, the server shutting down.  The batch fails (and is retried), as on SQLite.  A
# statement cancelled by statement_timeout (QueryCanceledError, a kind of OperatorIntervention)
# is that effect's own failure.
_PASSING = (asyncpg.TransactionRollbackError, asyncpg.LockNotAvailableError, asyncpg.OperatorInterventionError)


class _Refused(Exception):
    """One effect failed by itself (a constraint, a value the column refuses, its finish)."""


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """A collection statement's `?` placeholders as $1, $2, ... (collections.py writes `?`
    for both dialects; its names are checked identifiers, its values all parameters)."""
    count = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


async def _write_one(connection: asyncpg.Connection, effect, insert_job: str):
    raw, changed = None, 0
    try:
        for write in effect.writes:
            sql = _numbered(write.sql)
            if effect.shape == "row":
                found = await connection.fetchrow(sql, *write.params)
                raw = tuple(found) if found is not None else None
            elif effect.shape == "rows":
                raw = _rows(await connection.fetch(sql, *write.params))
            else:
                count = (await connection.execute(sql, *write.params)).rpartition(" ")[2]
                changed += int(count) if count.isdigit() else 0
        given = raw if effect.shape in ("row", "rows") else changed if effect.shape == "count" else None
        result = effect.finish(given) if effect.finish is not None else None
        job = effect.job
        await connection.execute(insert_job, job.execution, job.position, job.node, job.type, job.status,
                                 effect.encode(result), job.error, job.logs, job.duration_ms)
    except asyncpg.QueryCanceledError as exc:
        raise _Refused() from exc   # past statement_timeout: this effect fails, alone
    except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError, *_PASSING):
        raise   # the connection, or a conflict that passes: the batch fails, and is tried again
    except Exception as exc:  # noqa: BLE001 - a constraint, a refused value, or the node's finish
        raise _Refused() from exc
    return result


def _refusal(exc: BaseException | None, statement_timeout: float):
    if isinstance(exc, asyncpg.QueryCanceledError):
        return StatementTimeout(statement_timeout)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return ConstraintError(str(exc))
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(f"PostgreSQL refused the write: {exc}")
    return exc
