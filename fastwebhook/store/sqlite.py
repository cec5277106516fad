"""The Store on SQLite: what it writes and reads, over `SqliteConnector` (sqlite_connector.py),
which owns the file, its connections and their threads."""

from __future__ import annotations

from itertools import count, repeat
from typing import Callable

import orjson

from ..core.errors import StoreError
from ..core.ids import first_id_at
from . import batch_codec
from .base import Store, held_in_memory, placeholders, within_bytes
from .rows import TRANSITIONS, Claim, Delivery, Records, Status
from .sqlite_connector import SqliteConnector


class SqliteStore(Store):
    """The Store on SQLite: the acknowledging append is one autocommit statement, the claim one
    script over scratch tables, records in batches; one writer at a time (several processes
    take turns on the file's lock)."""

    db: SqliteConnector

    def __init__(self, connector: SqliteConnector):
        super().__init__(connector)
        # record()'s two scripts, made once of statements alone: a BEGIN or COMMIT in them fails here
        changes, alerts = _statements(self.sql, "record_apply"), _statements(self.sql, "alerts_apply")
        self.record_script = f"BEGIN IMMEDIATE;\n{changes}\nCOMMIT;"
        self.record_alerts_script = f"BEGIN IMMEDIATE;\n{alerts}\n{changes}"   # COMMIT: after the read
        # ... and, on a file, record()'s statements for the collection writes' connection: a
        # change to each status, allowed after the statuses the transition table says
        self.record_final = {}
        for after in Status:
            befores = [f"'{before.value}'" for before, afters in TRANSITIONS.items() if after in afters]
            if befores:   # (nothing becomes queued again)
                self.record_final[after] = self.sql["record_final"].format(allowed=", ".join(befores))

    async def open(self) -> None:   # with the table of allowed transitions record() reads
        await self.db.open()
        await self.db.execute(self.sql["repair_cursor"])
        await self.db.stage("DELETE FROM temp.transitions", [(self.sql["stage_transition"], [
            (before.value, after.value) for before, afters in TRANSITIONS.items() for after in afters])])

    # -- the acknowledging write ----------------------------------------------------------------
    async def append(self, deliveries: list[Delivery], held_by: str | None = None) -> int:
        """The batch as one row, one autocommit statement; returns its sequence number.  (One
        SQLite file has one host, whose processes pass sync answers among themselves: `held_by`
        is for hosts sharing a PostgreSQL store.)"""
        blob = batch_codec.encode(deliveries)
        first, last = deliveries[0], deliveries[-1]
        return await self.db.insert_alone(self.sql["append"], (first.id, last.id, first.request.received_at,
                                                                len(deliveries), blob))

    def mark_served(self) -> None:
        self.db.mark_served()

    async def append_outside(self, deliveries: list[Delivery]) -> int:
        # (several processes of a server recount the depth from the store each second, but one
        # process does not; refused either way: the server's admin API takes replays as the door)
        with self.db.unserved():
            return await self.append(deliveries)

    async def held_keys(self, hashes: list[int], now: float) -> dict[int, bytes]:
        """Of these dedup hashes, those the unique index holds for a live execution."""
        held: dict[int, bytes] = {}
        for start in range(0, len(hashes), self.db.max_params):
            chunk = hashes[start:start + self.db.max_params]
            sql = self.sql["find_dedup"].format(hashes=placeholders(len(chunk)))
            held.update(await self.db.fetch(sql, (now, *chunk)))
        return held

    # -- the claim ------------------------------------------------------------------------------
    async def claim(self, owner: str, now: float, lease_until: float, limit: int,
                    in_memory: Callable[[int], list[Delivery] | None],
                    runs_nothing: Callable[[str], bool], max_bytes: int | None = None) -> Claim:
        """Take the next `limit` unclaimed deliveries, in order (a batch may be taken in parts).

        `in_memory(seq)` gives a batch this process still holds (else it is read back; the
        claim says which batches it finished and which one it left part of);
        `runs_nothing(workflow)` says a delivery can be resolved in the claim itself.

        What to take is read first, outside any transaction; the writing is one script, one
        transaction, one thread crossing (`claim_apply`), which applies only if the cursor has
        not moved meanwhile: the store is held for the time the SQL takes, not for the round
        trips of a busy event loop."""
        claim = Claim()
        db = self.db
        (cursor, partial), = await db.fetch(self.sql["claim_cursor"])
        claim.done_below = cursor + 1   # (another process of the server may have claimed them)
        seqs = [row[0] for row in await db.fetch(self.sql["unclaimed"], (cursor, limit))]
        taken: list[tuple[int, int, Delivery]] = []
        new_cursor, new_partial, finished, left = cursor, partial, [], None
        for seq in seqs:
            batch = held_in_memory(in_memory, seq, runs_nothing)
            if batch is None:
                fetched = await db.fetch(self.sql["intake_batch"], (seq,))
                batch = batch_codec.decode(fetched[0][0])
            start = partial if seq == seqs[0] else 0
            part = batch[start:start + limit - len(taken)]
            if max_bytes is not None:
                part, max_bytes = within_bytes(part, max_bytes, runs_nothing, first=not taken)
            taken.extend(zip(repeat(seq), count(start), part))   # (seq, index, delivery), made in C
            if start + len(part) < len(batch):
                new_cursor, new_partial, left = seq - 1, start + len(part), (seq, batch)
                break
            new_cursor, new_partial = seq, 0
            finished.append(seq)
            if len(taken) >= limit:
                break
        if not taken:
            return claim
        keys: set[int] = set()   # (a key twice in the claim: the second is a duplicate)
        staged = []
        for pos, (seq, index, d) in enumerate(taken):
            first = d.dedup_hash is not None and d.dedup_hash not in keys
            if first:
                keys.add(d.dedup_hash)
            staged.append((pos, d.id, d.workflow, d.version, d.dedup_key, d.dedup_hash, int(first),
                           d.dedup_expires, d.request.received_at, seq, index, int(runs_nothing(d.workflow)),
                           owner, lease_until, now))
        await db.stage(self.sql["claim_clear"], [(self.sql["claim_stage"], staged)])
        await db.script(self.sql["claim_apply"].format(
            cursor=int(cursor), partial=int(partial), new_cursor=int(new_cursor), new_partial=int(new_partial)))
        duplicates = dict(await db.fetch(self.sql["claim_outcome"]))
        if duplicates.pop(-1, 0) != 1:
            return claim   # another claim moved the cursor first: these are its deliveries
        claim.finished, claim.partial = finished, left
        for pos, (_, _, delivery) in enumerate(taken):
            if pos in duplicates:
                claim.duplicates.append((delivery, duplicates[pos]))
            elif staged[pos][11]:
                claim.resolved.append(delivery)
            else:
                delivery.attempts = 1
                claim.run.append(delivery)
        return claim

    async def reclaim(self, owner: str, now: float, lease_until: float, limit: int,
                      dead_owners: tuple[str, ...] = ()) -> list[Delivery]:
        """Pending executions whose lease lapsed (or whose owner is known dead), oldest first,
        leased to `owner`, read back from their intake batches."""
        owners = dead_owners or ("",)
        # the common answer is "nothing": found without taking the store from the appends
        if not await self.db.fetch(self.sql["reclaimable"].format(owners=placeholders(len(owners))),
                                   (now, *owners)):
            return []
        sql = self.sql["reclaim"].format(owners=placeholders(len(owners)))
        async with self.db.transaction() as db:
            rows = await db.fetch(sql, (owner, lease_until, now, *owners, limit))
        return await self._deliveries(rows)

    async def renew(self, owner: str, lease_until: float) -> None:
        async with self.db.transaction() as db:
            await db.execute(self.sql["renew"], (lease_until, owner))

    # -- records, in batches --------------------------------------------------------------------
    async def record(self, records: Records) -> list[Delivery]:
        """Status changes, jobs and request-log lines in one transaction, in one thread crossing;
        a change the transition table does not allow is left out.  On a file they go in on the
        collection writes' connection (`write_apart`), a statement for each kind of row;
        otherwise one script writes them from staged rows.  Alerts (failure workflows'
        deliveries) go into the intake in that script, before the changes, for the failed
        executions it makes final."""
        jobs = [(j.execution, j.position, j.node, j.type, j.status, j.result, j.error, j.logs, j.duration_ms)
                for j in records.jobs]
        requests = [(r.at, r.ip, r.method, r.path, r.workflow, r.status, r.reason, r.body_size, r.duration_ms,
                     r.request_id, r.execution) for r in records.requests]
        if not records.alerts and self.db.apart:
            changes: dict[str, list[tuple]] = {}
            for f in records.finals.values():
                sql = self.record_final.get(f.status)
                if sql is not None:
                    changes.setdefault(sql, []).append((f.status.value, f.started_at, f.finished_at, f.error, f.id))
            await self.db.write_apart([*changes.items(), (self.sql["insert_job"], jobs),
                                       (self.sql["insert_request"], requests)])
            return []
        finals = [(f.id, f.status.value, f.started_at, f.finished_at, f.error) for f in records.finals.values()]
        staged = [(self.sql["stage_final"], finals), (self.sql["stage_job"], jobs),
                  (self.sql["stage_request"], requests)]
        if not records.alerts:
            await self.db.stage(self.sql["record_clear"], staged)
            await self.db.script(self.record_script)
            return []
        alerts = [(d.failure_of, d.id, d.request.received_at, batch_codec.encode([d])) for d in records.alerts]
        await self.db.stage(self.sql["record_clear"] + "\n" + self.sql["alerts_clear"],
                            [*staged, (self.sql["stage_alert"], alerts)])
        # which alerts went in is read before the COMMIT: a failed read leaves nothing written
        # (the records are retried whole), never alerts counted that no claim will take
        appended = {row[0] for row in await self.db.script_reading(self.record_alerts_script,
                                                                   self.sql["alerts_appended"])}
        return [d for d in records.alerts if d.id in appended]

    # -- admin reads ----------------------------------------------------------------------------
    async def replay_candidates(self, workflow: str | None, statuses: tuple[Status, ...], since: bytes,
                                until: bytes, limit: int) -> list[tuple[bytes, int, int]]:
        wanted = orjson.dumps([status.value for status in statuses]).decode()   # json_each's list
        if workflow is None:
            return await self.db.read_alone(self.sql["replay_candidates"], (wanted, since, until, limit))
        return await self.db.read_alone(self.sql["replay_candidates_of_workflow"],
                                        (workflow, wanted, since, until, limit))

    # -- retention ------------------------------------------------------------------------------
    async def purge_batch(self, before: float, limit: int, dedup_slice: tuple[int, int],
                          now: float) -> tuple[int, int, bool]:
        """One short transaction of the retention purge: up to `limit` finished executions
        created before `before` with their jobs, as many intake batches and request-log lines
        as old, and the expired dedup keys of one slice of the hash space.  Returns (executions
        removed, rows removed in all, whether one of those tables gave up `limit`: more may wait)."""
        async with self.db.transaction() as db:
            ids = [row[0] for row in await db.fetch(self.sql["purge_pick"], (first_id_at(before), before, limit))]
            removed = 0
            if ids:
                marks = placeholders(len(ids))
                removed += await db.execute(self.sql["purge_jobs"].format(ids=marks), tuple(ids))
                removed += await db.execute(self.sql["purge_executions"].format(ids=marks), tuple(ids))
            intake = await db.execute(self.sql["purge_intake"], (before, limit))
            requests = await db.execute(self.sql["purge_requests"], (before, limit))
            removed += intake + requests + await db.execute(self.sql["purge_dedup"], (*dedup_slice, now))
        return len(ids), removed, limit in (len(ids), intake, requests)


def _statements(sql: dict[str, str], name: str) -> str:
    """Block `name`'s statements, which a script puts in a transaction of its making."""
    block = sql[name]
    for word in ("BEGIN", "COMMIT", "ROLLBACK", "END TRANSACTION"):
        if any(line.lstrip().upper().startswith(word) for line in block.splitlines()):
            raise StoreError(f"sqlite.sql block {name!r} holds a {word}: the script record() makes of it "
                             "has its own (BEGIN IMMEDIATE ... COMMIT)")
    return block
