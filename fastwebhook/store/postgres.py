"""The PostgreSQL store, for several hosts sharing one database, over `PostgresConnector`
(postgres_connector.py).

The same `Store` as SQLite's, with the parts whose SQL has another shape here:
- the append is one round trip (the batch's row, and a NOTIFY for idle hosts; with the batch's
  dedup check, where other hosts take keys too);
- a claim takes whole intake batches with FOR UPDATE SKIP LOCKED, so hosts claim side by side
  rather than in turn, and a batch with a sync sender waiting is left to the host holding it;
- each delivery's dedup key goes into the unique index with INSERT ... ON CONFLICT in the
  claim's transaction, so a duplicate sent to two hosts at once runs once;
- leases are timed by the database's clock (clock_timestamp()), never a host's: a host gives
  only how long;
- records go in one statement (arrays unnested), one round trip.
"""

from __future__ import annotations

import time


from ..core.ids import first_id_at
from . import batch_codec
from .base import Store, held_in_memory
from .rows import Claim, Delivery, Records, Status
from .postgres_connector import PostgresConnector

CLAIM_TRIES = 4     # looks past batches another host is claiming, before calling the intake empty
HELD_FOR = 10.0     # seconds other hosts leave a batch to the host whose sync senders wait for it
# claim_staging's two temporary tables: their columns, in the order a claim stages them
CLAIM_KEYS = ("hash", "execution", "expires_at")
CLAIMING = ("id", "workflow", "version", "status", "dedup_key", "duplicate_of", "created_at", "intake_seq",
            "intake_index")


class PostgresStore(Store):
    db: PostgresConnector
    shared_by_hosts = True
    # Two appends in flight: the group commit's round trip overlaps the loop's work on the next
    # batch.  While the queue has room that is ~1.15x the acknowledgements of one (256 senders
    # from an empty queue); once it is full the claim sets the pace, and it changes nothing.
    appenders = 2

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
                    in_memory, runs_nothing, max_bytes: int | None = None) -> Claim:
        """The oldest unclaimed batches no other host is taking (SKIP LOCKED), whole, as many
        as make `limit` deliveries and, with `max_bytes`, that many bytes of blobs (at least
        one batch), in one transaction: their dedup keys into the unique index, their
        execution rows, the mark."""
        after: int | None = 0
        done_below = None
        for _ in range(CLAIM_TRIES):   # another host taking the same candidates: look past them
            claim, after = await self._claim_from(after, owner, now, lease_until, limit, in_memory, runs_nothing,
                                                  max_bytes)
            done_below = claim.done_below if done_below is None else done_below   # (the first try's)
            if claim.finished or after is None:
                break
        claim.done_below = done_below
        return claim

    async def _claim_from(self, after: int, owner: str, now: float, lease_until: float, limit: int,
                          in_memory, runs_nothing, max_bytes: int | None) -> tuple[Claim, int | None]:
        """One try from intake seq `after` on; also says where a next try would start (None:
        nothing was there to take).  A batch counts against `max_bytes` by its blob's size,
        read back or held in memory: its deliveries are claimed whole."""
        claim = Claim()
        wanted, total, total_bytes = [], 0, 0
        for seq, count, size in await self.db.fetch(self.sql["claim_sizes"], (limit, owner, now - HELD_FOR, after)):
            if after == 0 and not wanted:   # the oldest this host may take: below it, all are claimed
                claim.done_below = seq
            if wanted and (total + count > limit or (max_bytes is not None and total_bytes + size > max_bytes)):
                break
            wanted.append(seq)
            total += count
            total_bytes += size
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
                await session.copy_in("claim_keys", CLAIM_KEYS, [(h, d.id, d.dedup_expires) for h, d in first.items()])
                holders = dict(await session.fetch(self.sql["claim_keys"], (now,)))
            rows = []
            for seq, index, d in taken:
                holder = holders.get(d.dedup_hash)   # (no key: None)
                if holder == d.id:   # its own key
                    holder = None
                if holder is not None:
                    status = Status.DUPLICATE
                    claim.duplicates.append((d, holder))
                elif runs_nothing(d.workflow):
                    status = Status.RESOLVED
                    claim.resolved.append(d)
                else:
                    status = Status.QUEUED
                    d.attempts = 1
                    claim.run.append(d)
                rows.append((d.id, d.workflow, d.version, status, d.dedup_key, holder, d.request.received_at,
                             seq, index))
            await session.copy_in("claiming", CLAIMING, rows)
            await session.execute(self.sql["claim_insert"], (max(0.0, lease_until - now), owner))
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
                [batch_codec.encode([d]) for d in records.alerts]))}
            await session.fetch(self.sql["record_apply"], params)
        return [d for d in records.alerts if d.id in appended]

    async def replay_candidates(self, workflow: str | None, statuses: tuple[Status, ...], since: bytes,
                                until: bytes, limit: int) -> list[tuple[bytes, int, int]]:
        wanted = [status.value for status in statuses]
        if workflow is None:
            return await self.db.read_alone(self.sql["replay_candidates"], (wanted, since, until, limit))
        return await self.db.read_alone(self.sql["replay_candidates_of_workflow"],
                                        (workflow, wanted, since, until, limit))

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
