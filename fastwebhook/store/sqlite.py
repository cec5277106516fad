"""The embedded store: one SQLite file in WAL mode, through aiosqlite.

aiosqlite hands every call to its thread; a batch goes over as one function that runs its
`executemany` calls inside one BEGIN IMMEDIATE ... COMMIT, so it costs one crossing whatever its
size.  `synchronous=FULL` makes a commit survive power loss, which is what
`durability = "commit"` promises.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import StoreError
from .. import records
from .base import Batch, ClaimedExecution
from .sql import queries

SQL = queries("sqlite")


class SqliteStore:
    def __init__(self, path: str, *, synchronous: str = "FULL"):
        self.path = path
        self.synchronous = synchronous
        self._db: aiosqlite.Connection | None = None
        # One connection, one transaction at a time: batches, claims and purges take turns.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=10.0)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            await self._db.execute("PRAGMA busy_timeout=10000")
            await self._db.executescript(SQL["schema"])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await self._db.close()
            self._db = None

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    # -- writes ------------------------------------------------------------------------------
    async def commit(self, batch: Batch, now: float) -> dict[int, bytes]:
        async with self._lock:
            return await self._in_thread(_write_batch, batch, now)

    async def claim(self, owner: str, now: float, lease_until: float, limit: int,
                    reclaim_owners: tuple[str, ...] = ()) -> list[ClaimedExecution]:
        owners = reclaim_owners or ("",)
        sql = SQL["claim"].format(owners=",".join("?" * len(owners)))
        async with self._lock, self._transaction() as db:
            async with db.execute(sql, (owner, lease_until, now, *owners, limit)) as cursor:
                rows = await cursor.fetchall()
        rows.sort(key=lambda row: row[8])
        return [ClaimedExecution(*row[:8]) for row in rows]

    async def renew(self, owner: str, lease_until: float) -> None:
        async with self._lock, self._transaction() as db:
            await db.execute(SQL["renew"], (lease_until, owner))

    async def purge(self, before: float) -> int:
        async with self._lock, self._transaction() as db:
            await db.execute(SQL["purge_jobs"], (before,))
            cursor = await db.execute(SQL["purge_executions"], (before,))
            removed = cursor.rowcount
            await db.execute(SQL["purge_requests"], (before,))
            await db.execute(SQL["purge_dedup"], (before,))
        return removed

    # -- reads -------------------------------------------------------------------------------
    async def pending_owners(self) -> list[str]:
        return [row[0] for row in await self._fetch(SQL["pending_owners"], ())]

    async def live_dedup(self, now: float, limit: int) -> list[tuple[int, bytes, float]]:
        return [(row[0], row[1], row[2]) for row in await self._fetch(SQL["live_dedup"], (now, limit))]

    async def get_execution(self, id: bytes) -> dict[str, Any] | None:
        rows = await self._fetch(SQL["get_execution"], (id,))
        if not rows:
            return None
        jobs = await self._fetch(SQL["get_jobs"], (id,))
        return records.execution(rows[0], jobs)

    async def list_executions(self, workflow, status, limit, before) -> list[dict[str, Any]]:
        rows = await self._fetch(SQL["list_executions"], (workflow, status, before, limit))
        return [records.execution(row, None) for row in rows]

    async def list_requests(self, limit: int, before: int | None) -> list[dict[str, Any]]:
        rows = await self._fetch(SQL["list_requests"], (before, limit))
        return [records.request(row) for row in rows]

    # -- plumbing ----------------------------------------------------------------------------
    async def _fetch(self, sql: str, params: tuple) -> list:
        db = self._connection()
        try:
            async with db.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    def _transaction(self):
        return _Transaction(self._connection())

    async def _in_thread(self, function, *args):
        """Run ``function(connection, *args)`` on the connection's thread: a whole batch is one
        thread crossing instead of one per statement.  aiosqlite has no public call for this;
        `_execute` is what its own methods use (pinned in pyproject.toml)."""
        db = self._connection()
        return await db._execute(function, db._conn, *args)


class _Transaction:
    """BEGIN IMMEDIATE takes the write lock up front, so two processes never deadlock
    upgrading a read; any failure rolls the whole batch back."""

    def __init__(self, db: aiosqlite.Connection):
        self.db = db

    async def __aenter__(self) -> aiosqlite.Connection:
        try:
            await self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite is unavailable: {exc}") from exc
        return self.db

    async def __aexit__(self, kind, exc, tb) -> None:
        if exc is None:
            try:
                await self.db.execute("COMMIT")
                return
            except sqlite3.Error as commit_exc:
                exc = commit_exc
        try:
            await self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"SQLite write failed: {exc}") from exc


def _write_batch(db: sqlite3.Connection, batch: Batch, now: float) -> dict[int, bytes]:
    """One batch, one transaction, on the connection's thread."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite is unavailable: {exc}") from exc
    try:
        duplicates = _resolve_dedup(db, batch, now)
        fresh = [e for i, e in enumerate(batch.executions) if i not in duplicates]
        if fresh:
            db.executemany(SQL["insert_execution"], [
                (e.id, e.workflow, e.version, e.dedup_key, e.created_at, e.owner, e.lease_until,
                 e.request, e.body) for e in fresh])
            keyed = [(e.dedup_hash, e.id, e.dedup_expires) for e in fresh if e.dedup_hash is not None]
            if keyed:
                db.executemany(SQL["upsert_dedup"], keyed)
        if batch.requests:
            db.executemany(SQL["insert_request"], [
                (r.at, r.ip, r.method, r.path, r.workflow, r.status, r.reason, r.body_size,
                 r.duration_ms, r.request_id, r.execution) for r in batch.requests])
        if batch.transitions:
            changes = batch.transitions.values()
            started = [(t.started_at, t.id) for t in changes if t.status == "started"]
            finished = [(t.status, t.started_at, t.finished_at, t.error, t.id) for t in changes if t.status != "started"]
            if started:
                db.executemany(SQL["mark_started"], started)
            if finished:
                db.executemany(SQL["mark_finished"], finished)
        if batch.jobs:
            db.executemany(SQL["insert_job"], [
                (j.execution, j.position, j.node, j.type, j.status, j.result, j.error, j.logs,
                 j.duration_ms) for j in batch.jobs])
        db.execute("COMMIT")
    except BaseException as exc:  # whatever failed, the connection must not stay in the transaction
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"SQLite write failed: {exc}") from exc
        raise
    return duplicates


def _resolve_dedup(db: sqlite3.Connection, batch: Batch, now: float) -> dict[int, bytes]:
    """The store is the truth for dedup: a key held by a live execution, or claimed by an
    earlier request of this same batch, makes the request a duplicate of that one."""
    keyed = [(i, e.dedup_hash) for i, e in enumerate(batch.executions) if e.dedup_hash is not None]
    if not keyed:
        return {}
    hashes = sorted({h for _, h in keyed})
    held: dict[int, bytes] = {}
    for start in range(0, len(hashes), 500):
        chunk = hashes[start:start + 500]
        sql = SQL["find_dedup"].format(hashes=",".join("?" * len(chunk)))
        held.update(db.execute(sql, (now, *chunk)).fetchall())
    duplicates = {}
    for index, dedup_hash in keyed:
        original = held.get(dedup_hash)
        if original is not None:
            duplicates[index] = original
        else:
            held[dedup_hash] = batch.executions[index].id
    return duplicates
