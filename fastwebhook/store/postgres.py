"""The PostgreSQL store (asyncpg), for several hosts sharing one database.

The same `Store` as SQLite's, with the parts whose SQL has another shape here:
- the append is one round trip (the batch's row, and a NOTIFY for idle hosts);
- a claim takes whole intake batches with FOR UPDATE SKIP LOCKED, so hosts claim side by side
  rather than in turn, and a batch with a sync sender waiting is left to the host holding it;
- each delivery's dedup key goes into the unique index with INSERT ... ON CONFLICT in the
  claim's transaction, so a duplicate sent to two hosts at once runs once;
- collections' statements (collections.py writes `?`) get numbered placeholders;
- leases are timed by the database's clock (clock_timestamp()), never a host's: a host gives
  only how long;
- records go in one statement (arrays unnested), one round trip;
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
import time
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg

from ..core.errors import ConstraintError, StoreError
from ..core.ids import first_id_at
from . import batch_codec
from .base import StatementTimeout, Store, held_in_memory
from .rows import TRANSITIONS, Claim, Delivery, Records, Status
from .sql import queries

MIGRATION_LOCK = 0x66776862    # pg_advisory_lock key: "fwhb"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
POOL_SIZE = 8
BOUNDED_POOL_SIZE = 4   # collection writes (one batch at a time) and reads beside the intake's
APPLICATION = "fastwebhook"     # pg_stat_activity's application_name of every connection
CLAIM_TRIES = 4     # looks past batches another host is claiming, before calling the intake empty
HELD_FOR = 10.0     # seconds other hosts leave a batch to the host whose sync senders wait for it


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
                                                  server_settings=settings)
            timeout = max(1, round(self.statement_timeout * 1000))   # milliseconds
            # statement_timeout counts a wait for another host's row lock too: lock_timeout ends
            # such a wait first, as a conflict that passes (the batch is tried again), so the
            # budget fails only a statement that itself runs long.
            self.bounded = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=BOUNDED_POOL_SIZE, timeout=10,
                server_settings={**settings, "statement_timeout": str(timeout),
                                 "lock_timeout": str(max(1, timeout // 2))})
        await self._migrate()

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


class PostgresStore(Store):
    db: PostgresConnector
    shared_by_hosts = True

    async def listen(self, channel: str, callback) -> None:
        await self.db.listen(channel, callback)

    async def keep_listening(self) -> None:
        await self.db.listening()

    async def append(self, deliveries: list[Delivery], held_by: str | None = None) -> int:
        """`held_by`: a sync sender waits on that host for some of these; other hosts leave the
        batch to it for HELD_FOR seconds (then it is taken to have died)."""
        blob = batch_codec.encode(deliveries)
        first, last = deliveries[0], deliveries[-1]
        (seq, _), = await self.db.fetch(self.sql["append"], (first.id, last.id, first.request.received_at,
                                                             len(deliveries), blob, held_by))
        return seq

    async def held_keys(self, hashes: list[int], now: float) -> dict[int, bytes]:
        return dict(await self.db.fetch(self.sql["find_dedup"], (now, hashes)))

    async def append_unless_held(self, deliveries: list[Delivery], hashes: list[int], now: float,
                                 held_by: str | None = None) -> tuple[int | None, dict[int, bytes]]:
        """One round trip (the check and the append were two, each acknowledgement waiting on both)."""
        blob = batch_codec.encode(deliveries)
        first, last = deliveries[0], deliveries[-1]
        rows = await self.db.fetch(self.sql["append_unless_held"], (
            first.id, last.id, first.request.received_at, len(deliveries), blob, held_by, now, hashes))
        if len(rows) == 1 and rows[0][0] is not None:
            return rows[0][0], {}
        return None, {hash_: execution for _, hash_, execution in rows}

    async def claim(self, owner: str, now: float, lease_until: float, limit: int,
                    in_memory, runs_nothing) -> Claim:
        """The oldest unclaimed batches no other host is taking (SKIP LOCKED), whole, as many
        as make `limit` deliveries (at least one), in one transaction: their dedup keys into
        the unique index, their execution rows, the mark."""
        after: int | None = 0
        for _ in range(CLAIM_TRIES):   # another host taking the same candidates: look past them
            claim, after = await self._claim_from(after, owner, now, lease_until, limit, in_memory, runs_nothing)
            if claim.finished or after is None:
                break
        return claim

    async def _claim_from(self, after: int, owner: str, now: float, lease_until: float, limit: int,
                          in_memory, runs_nothing) -> tuple[Claim, int | None]:
        """One try from intake seq `after` on; also says where a next try would start (None:
        nothing was there to take)."""
        claim = Claim()
        wanted, total = [], 0
        for seq, count in await self.db.fetch(self.sql["claim_sizes"], (limit, owner, now - HELD_FOR, after)):
            if wanted and total + count > limit:
                break
            wanted.append(seq)
            total += count
        if not wanted:
            return claim, None
        held = {seq: batch for seq in wanted if (batch := held_in_memory(in_memory, seq, runs_nothing)) is not None}
        async with self.db.transaction() as session:
            picked = await session.fetch(self.sql["claim_pick"], (wanted, list(held)))
            taken: list[tuple[int, int, Delivery]] = []
            for seq, blob in picked:
                batch = held.get(seq) or batch_codec.decode(blob)
                taken.extend((seq, index, d) for index, d in enumerate(batch))
            if not taken:   # another host is claiming every one of them
                return claim, wanted[-1]
            first: dict[int, Delivery] = {}
            for _, _, d in taken:
                if d.dedup_hash is not None:
                    first.setdefault(d.dedup_hash, d)
            holders: dict[int, bytes] = {}
            if first:
                keys = sorted(first)   # one order for every host: no two claims wait on each other in a ring
                holders = dict(await session.fetch(self.sql["claim_keys"], (
                    keys, [first[h].id for h in keys], [first[h].dedup_expires for h in keys], now)))
            columns: list[list] = [[] for _ in range(9)]
            for seq, index, d in taken:
                holder = holders.get(d.dedup_hash) if d.dedup_hash is not None else None
                if holder is not None and holder != d.id:
                    status = Status.DUPLICATE
                    claim.duplicates.append((d, holder))
                elif runs_nothing(d.workflow):
                    status = Status.RESOLVED
                    claim.resolved.append(d)
                else:
                    status = Status.QUEUED
                    d.attempts = 1
                    claim.run.append(d)
                for column, value in zip(columns, (d.id, d.workflow, d.version, status, d.dedup_key,
                                                   holder if status == Status.DUPLICATE else None,
                                                   d.request.received_at, seq, index)):
                    column.append(value)
            await session.execute(self.sql["claim_insert"], (*columns[:8], max(0.0, lease_until - now), owner,
                                                             columns[8]))
            await session.execute(self.sql["claim_mark"], ([seq for seq, _ in picked],))
        claim.finished = [seq for seq, _ in picked]
        return claim, wanted[-1]

    async def reclaim(self, owner: str, now: float, lease_until: float, limit: int,
                      dead_owners: tuple[str, ...] = ()) -> list[Delivery]:
        owners = list(dead_owners)
        if not await self.db.fetch(self.sql["reclaimable"], (owners,)):
            return []
        async with self.db.transaction() as session:
            rows = await session.fetch(self.sql["reclaim"], (owner, max(0.0, lease_until - now), owners, limit))
        return await self._deliveries(rows)

    async def renew(self, owner: str, lease_until: float) -> None:
        await self.db.execute(self.sql["renew"], (max(0.0, lease_until - time.time()), owner))

    async def record(self, records: Records) -> list[Delivery]:
        finals = list(zip(*[(f.id, f.status.value, f.started_at, f.finished_at, f.error)
                            for f in records.finals.values()])) or [()] * 5
        jobs = list(zip(*[(j.execution, j.position, j.node, j.type, j.status, j.result, j.error, j.logs,
                           j.duration_ms) for j in records.jobs])) or [()] * 9
        requests = list(zip(*[(r.at, r.ip, r.method, r.path, r.workflow, r.status, r.reason, r.body_size,
                               r.duration_ms, r.request_id, r.execution) for r in records.requests])) or [()] * 11
        params = tuple(list(column) for column in (*finals, *jobs, *requests))
        if not records.alerts:
            await self.db.fetch(self.sql["record_apply"], params)
            return []
        # Alerts first, in the same transaction: their failed executions' rows are locked, so
        # an attempt of another host that makes one final first leaves this one out.
        async with self.db.transaction() as session:
            appended = {row[0] for row in await session.fetch(self.sql["alerts_apply"], (
                [d.failure_of for d in records.alerts], [d.id for d in records.alerts],
                [d.request.received_at for d in records.alerts],
                [batch_codec.encode_alert(d) for d in records.alerts]))}
            await session.fetch(self.sql["record_apply"], params)
        return [d for d in records.alerts if d.id in appended]

    async def purge_batch(self, before: float, limit: int, dedup_slice: tuple[int, int],
                          now: float) -> tuple[int, int, bool]:
        async with self.db.transaction() as session:
            ids = [row[0] for row in await session.fetch(self.sql["purge_pick"], (first_id_at(before), before, limit))]
            removed = 0
            if ids:
                removed += await session.execute(self.sql["purge_jobs"], (ids,))
                removed += await session.execute(self.sql["purge_executions"], (ids,))
            intake = await session.execute(self.sql["purge_intake"], (before, limit))
            requests = await session.execute(self.sql["purge_requests"], (before, limit))
            removed += intake + requests + await session.execute(self.sql["purge_dedup"], (*dedup_slice, now))
        return len(ids), removed, limit in (len(ids), intake, requests)
