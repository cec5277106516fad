"""The `Store` both dialects share, and what each writes in its own way: `SqliteStore`
(sqlite.py) and `PostgresStore` (postgres.py) are siblings, each over its own connector.

The acknowledging write is ONE append per group commit (`append`): the batch's deliveries as one
blob row.  The per-request index work comes later, in batches, at the claim (`claim`): each
delivery gets its execution row and its dedup key goes into the unique index, in the claim's
transaction; a key already taken makes the delivery a duplicate of its holder.  Status changes,
jobs and request-log lines are written in batches (`record`).  Work is leased (owner + expiry)
so several processes, later several hosts, share one store without double runs.
"""

from __future__ import annotations

from typing import AsyncContextManager, Callable, Protocol

import orjson

from ..core.errors import StoreError
from . import batch_codec
from .rows import (Claim, ClaimCopies, Delivery, Effect, ExecutionRecord, Final, Job, Records,
                   RequestLine, Status, StoredRequest, bodies_within, workflow_of)


class StatementTimeout(StoreError):
    """A collection statement or an admin read ran past `[storage] statement_timeout` and was
    stopped (its node fails; its admin request is answered 400)."""

    def __init__(self, seconds: float):
        super().__init__(f"the statement ran past storage.statement_timeout ({round(seconds * 1000)} ms) "
                         "and was stopped")


class Session(Protocol):
    """What a connector's `transaction()` yields: statements inside that one transaction."""

    async def execute(self, sql: str, params: tuple = ()) -> int: ...   # the rows it changed
    async def fetch(self, sql: str, params: tuple = ()) -> list[tuple]: ...


class Connector(Protocol):
    """What the shared `Store` and the admin reads (reads.py) need of a database.  Each store's
    own writes (the append, the claim, records) use their dialect's connector directly."""

    dialect: str
    sql: dict[str, str]

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def fetch(self, sql: str, params: tuple = ()) -> list[tuple]: ...   # on the write path
    def transaction(self) -> AsyncContextManager[Session]: ...   # one transaction, nothing else inside
    async def read_alone(self, sql: str, params: tuple = ()) -> list[tuple]: ...  # off the write path, budgeted
    async def apply_effects(self, effects: list, insert_job: str) -> list: ...  # one transaction
    async def run_ddl(self, statements: list[str]) -> None: ...
    async def checkpoint(self) -> None: ...  # the dialect's housekeeping of its log, if any


def placeholders(count: int) -> str:
    return ",".join("?" * count)


def held_in_memory(in_memory: Callable[[int], list[Delivery] | None], seq: int,
                   runs_nothing: Callable[[str], bool]) -> list[Delivery] | None:
    """Intake batch `seq` as the claimer's memory holds it, if that is enough for a claim: claim
    copies are not, once a delivery among them has something to run (a reload gave its workflow
    nodes): that batch is read back."""
    batch = in_memory(seq)
    if isinstance(batch, ClaimCopies) and not all(map(runs_nothing, set(map(workflow_of, batch)))):
        return None
    return batch


def within_bytes(part: list[Delivery], budget: int, runs_nothing: Callable[[str], bool],
                 first: bool) -> tuple[list[Delivery], int]:
    """As much of a claim's `part` as `budget` bytes of bodies to run hold (the `first` part of
    a claim keeps one delivery whatever its size), and the budget left.  A part whose workflows
    all run nothing holds none: its deliveries are resolved in the claim and let go."""
    if not part or all(map(runs_nothing, set(map(workflow_of, part)))):
        return part, budget
    fits, used = bodies_within(part, budget, at_least_one=first)
    return part[:fits], budget - used


class Store:
    shared_by_hosts = False     # several hosts on one database (PostgreSQL): they follow each other
    appenders = 1               # group commits in flight at once (SQLite: one writer at a time)

    def __init__(self, connector: Connector):
        self.db = connector
        self.sql = connector.sql

    async def open(self) -> None:
        await self.db.open()

    # -- what each dialect writes in its own way (SqliteStore, PostgresStore) --------------------
    async def append(self, deliveries: list[Delivery], held_by: str | None = None) -> int:
        """The batch as one row, durably; its sequence number.  `held_by`: the owner whose sync
        senders wait for some of these (hosts sharing a store leave it to that one)."""
        raise NotImplementedError

    async def held_keys(self, hashes: list[int], now: float) -> dict[int, bytes]:
        """Of these dedup hashes, those the unique index holds for a live execution."""
        raise NotImplementedError

    async def append_unless_held(self, deliveries: list[Delivery], hashes: list[int], now: float,
                                 held_by: str | None = None) -> tuple[int | None, dict[int, bytes]]:
        """`append`, unless the unique index holds one of `hashes` (keys other processes or hosts
        may have taken) for a live execution: then nothing is appended and those keys come back
        with their executions.  (A dialect may do both in one round trip.)"""
        held = await self.held_keys(hashes, now)
        if held:
            return None, held
        return await self.append(deliveries, held_by), {}

    async def claim(self, owner: str, now: float, lease_until: float, limit: int,
                    in_memory: Callable[[int], list[Delivery] | None],
                    runs_nothing: Callable[[str], bool], max_bytes: int | None = None) -> Claim:
        """The next `limit` unclaimed deliveries, in order, each given its execution row and its
        dedup key in the unique index, leased to `owner`; with `max_bytes`, no more of them
        than that many bytes of bodies to run hold (one at least, however large)."""
        raise NotImplementedError

    async def reclaim(self, owner: str, now: float, lease_until: float, limit: int,
                      dead_owners: tuple[str, ...] = ()) -> list[Delivery]:
        """Pending executions whose lease lapsed (or whose owner is known dead), leased to `owner`."""
        raise NotImplementedError

    async def renew(self, owner: str, lease_until: float) -> None:
        raise NotImplementedError

    async def record(self, records: Records) -> list[Delivery]:
        """Status changes, jobs and request-log lines, in one transaction; and in it, each of
        `records.alerts` (a failure workflow's delivery) appended to the intake as a batch of
        its own if, and only if, this transaction is the one that makes its failed execution
        final (another attempt may have done so first).  Returns the alerts appended."""
        raise NotImplementedError

    async def purge_batch(self, before: float, limit: int, dedup_slice: tuple[int, int],
                          now: float) -> tuple[int, int, bool]:
        """One short transaction of the retention purge."""
        raise NotImplementedError

    async def replay_candidates(self, workflow: str | None, statuses: tuple[Status, ...], since: bytes,
                                until: bytes, limit: int) -> list[tuple[bytes, int, int]]:
        """(id, intake seq, index in that batch) of up to `limit` executions of `workflow` (of
        every one when None) in one of `statuses`, made from `since` up to `until` (ids), oldest
        first: a range of executions_by_workflow when a workflow is named, else of the primary
        key.  A read off the write path, within the statement budget."""
        raise NotImplementedError

    async def close(self) -> None:
        await self.db.close()

    def mark_served(self) -> None:
        """A server runs on this store from now until `close` (see `append_outside`)."""

    async def append_outside(self, deliveries: list[Delivery]) -> int:
        """An append by no server (the command line's replays, for the next claim to find).
        Where a server's queue counts only what it acknowledged itself, it is refused while one
        serves: that server's claim would release deliveries it never counted."""
        return await self.append(deliveries)

    async def ping(self) -> None:
        await self.db.fetch("SELECT 1")

    async def checkpoint(self) -> None:
        await self.db.checkpoint()

    async def _deliveries(self, rows: list[tuple]) -> list[Delivery]:
        """(intake_seq, intake_index, attempts) rows -> their deliveries, each batch read once."""
        blobs: dict[int, list[Delivery]] = {}
        found = []
        for seq, index, attempts in sorted(rows):
            if seq not in blobs:
                fetched = await self.db.fetch(self.sql["intake_batch"], (seq,))
                blobs[seq] = batch_codec.decode(fetched[0][0]) if fetched else []
            if index < len(blobs[seq]):
                delivery = blobs[seq][index]
                delivery.attempts = attempts
                found.append(delivery)
        return found

    async def pending_owners(self) -> list[str]:
        return [row[0] for row in await self.db.fetch(self.sql["pending_owners"])]

    # -- collections ----------------------------------------------------------------------------
    async def ensure_collections(self, collections) -> None:
        """Every collection's table and unique indexes; a field added to the config since is
        added as a column (nothing is ever dropped)."""
        for collection in collections:
            await self.db.run_ddl(collection.ddl(self.db.dialect))   # (an in-memory store refuses: StoreError)
            have = {row[0] for row in await self.db.read_alone(self.sql["table_columns"],
                                                                (f"records_{collection.name}",))}
            missing = [collection.add_column(f, self.db.dialect) for f in collection.fields if f not in have]
            if missing:
                await self.db.run_ddl(missing)

    async def write_effects(self, effects: list[Effect]) -> list:
        """Each effect's writes with its job row, the batch in one transaction; an effect that
        breaks a constraint fails alone (its slot holds the error)."""
        return await self.db.apply_effects(effects, self.sql["insert_job"])

    async def read_records(self, sql: str, params: tuple) -> list[tuple]:
        return await self.db.read_alone(sql, params)

    async def committed_jobs(self, execution: bytes) -> dict[str, Job]:
        """The jobs an earlier attempt of this execution committed, by node key."""
        return {row[2]: Job(*row) for row in await self.db.fetch(self.sql["get_jobs"], (execution,))
                if row[4] == Status.RESOLVED}

    # -- start-up -------------------------------------------------------------------------------
    async def unfinished(self) -> int:
        """Acknowledged executions not final: unclaimed deliveries plus pending executions."""
        (unclaimed, pending), = await self.db.fetch(self.sql["unfinished"])
        return unclaimed + pending

    async def pending_by_workflow(self) -> dict[str, int]:
        """Executions claimed and not final, by workflow (each one's share of the queue)."""
        return dict(await self.db.fetch(self.sql["pending_by_workflow"]))

    async def unfinished_by_workflow(self) -> dict[str, int]:
        """`unfinished()` by workflow (at start: the unclaimed deliveries are read through)."""
        counts = dict(await self.pending_by_workflow())
        async for d in self.unclaimed_newest(None):
            counts[d.workflow] = counts.get(d.workflow, 0) + 1
        return counts

    async def live_keys(self, now: float, limit: int) -> list[tuple[int, bytes, float]]:
        """(hash, execution id, expires_at) of live dedup keys: those of unclaimed deliveries,
        newest first, then those of the unique index, newest first."""
        keys: list[tuple[int, bytes, float]] = []
        async for d in self.unclaimed_newest(None):
            if len(keys) >= limit:
                break
            if d.dedup_hash is not None and d.dedup_expires > now:
                keys.append((d.dedup_hash, d.id, d.dedup_expires))
        for row in await self.db.fetch(self.sql["live_dedup"], (now, max(0, limit - len(keys)))):
            keys.append((row[0], row[1], row[2]))
        return keys[:limit]

    async def unclaimed_newest(self, before: bytes | None, page: int = 16):
        """The unclaimed intake's deliveries, newest first, from batches that start before
        `before` (all when None), read a page of batches at a time."""
        while True:
            rows = await self.db.read_alone(self.sql["unclaimed_newest"], (before, page))
            if not rows:
                return
            for _, blob in rows:
                deliveries = batch_codec.decode(blob)
                for d in reversed(deliveries):
                    yield d
                before = deliveries[0].id

    # -- workflows stored through the admin API -------------------------------------------------
    async def stored_workflows(self) -> dict[str, dict]:
        """key -> the workflow's table (as the admin API took it)."""
        return {key: orjson.loads(definition) for key, definition in await self.db.fetch(self.sql["stored_workflows"])}

    async def put_workflow(self, key: str, table: dict, now: float, *, create: bool) -> bool:
        """Create (when `create`; False if the key is taken) or replace (False if absent)."""
        definition = orjson.dumps(table)
        async with self.db.transaction() as db:
            if create:
                return await db.execute(self.sql["create_workflow"], (key, definition, now, now)) == 1
            return await db.execute(self.sql["replace_workflow"], (definition, now, key)) == 1

    async def delete_workflow(self, key: str) -> bool:
        async with self.db.transaction() as db:
            return await db.execute(self.sql["delete_workflow"], (key,)) == 1

    async def workflows_signature(self) -> tuple:
        """Changes whenever a stored workflow is created, replaced or deleted (hosts poll it)."""
        return tuple((await self.db.fetch(self.sql["workflows_signature"]))[0])


__all__ = ["Claim", "Connector", "Session", "Delivery", "ExecutionRecord", "Final", "Job", "Records",
           "RequestLine", "Status", "Store", "StoredRequest"]
