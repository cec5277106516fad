"""The admin API's and the CLI's reads over a Store: executions and the request log, as they
show them.  On the store's read-only connection (`read_alone`), never on the one that commits
the intake's appends, each statement within the statement budget."""

from __future__ import annotations

import asyncio
from itertools import groupby
from typing import Callable

from . import batch_codec
from .base import Store
from .rows import Delivery, ExecutionRecord, Job, RequestLine, Status


# A scan (`scan_executions`) reads the intake a row at a time while its rows are big (a batch
# holds up to 1000 requests, each up to max_body_size), more of them while they are small:
SCAN_READ_BYTES = 1 << 20       # intake blobs one read brings, about (never fewer than one row)
SCAN_PAGE = 16                  # rows one read brings at most (batches of a request or two)
# and lets the event loop run after this many bytes of bodies, or deliveries, given to `matches`
SCAN_STEP_BYTES = 256 << 10
SCAN_STEP_DELIVERIES = 128


class Reads:
    def __init__(self, store: Store):
        self.store = store

    async def _read(self, query: str, params: tuple) -> list[tuple]:
        return await self.store.db.read_alone(self.store.sql[query], params)

    async def get_execution(self, id: bytes) -> ExecutionRecord | None:
        rows = await self._read("get_execution", (id,))
        if rows:
            record = await self._record(rows[0])
            record.jobs = [Job(*row) for row in await self._read("get_jobs", (id,))]
            return record
        for seq, first_id, blob in await self._read("intake_holding", (id,)):
            for d in batch_codec.decode(blob):
                if d.id == id:
                    return _queued(d, [])
        return None

    async def list_executions(self, workflow: str | None, status: Status | None, limit: int,
                              before: bytes | None) -> list[ExecutionRecord]:
        """Newest first: unclaimed deliveries (queued) merged with execution rows.  The intake
        is read first, so a claim in between shows an execution twice (dropped), never zero times."""
        found: dict[bytes, ExecutionRecord] = {}
        if status in (None, Status.QUEUED):
            async for d in self.store.unclaimed_newest(before):
                if len(found) >= limit:
                    break
                if (before is None or d.id < before) and (workflow is None or d.workflow == workflow):
                    found[d.id] = _queued(d, None)
        rows = await self._read("list_executions", (workflow, status, before, limit))
        for row in rows:
            found[row[0]] = await self._record(row, with_request=True)
        return sorted(found.values(), key=lambda r: r.id, reverse=True)[:limit]

    async def list_requests(self, limit: int, before: tuple[float, str] | None) -> list[RequestLine]:
        """Newest first: the request-log rows merged with the intake's accepted deliveries
        (each of those is its own request-log line).  `before` is (at, request id)."""
        at = before[0] if before else None
        lines = [RequestLine(*row) for row in await self._read("list_requests", (at, limit + 64))]
        for (blob,) in await self._read("intake_newest", (at, max(4, limit // 8))):
            for d in batch_codec.decode(blob):
                if d.logged:
                    continue
                r = d.request
                lines.append(RequestLine(r.received_at, r.ip, r.method, r.path, d.workflow, 202, None,
                                         len(d.body), d.door_ms, r.request_id, d.id))
        if before is not None:
            lines = [line for line in lines if (line.at, line.request_id) < before]
        lines.sort(key=lambda line: (line.at, line.request_id), reverse=True)
        return lines[:limit]

    async def replay_candidates(self, workflow: str | None, statuses: tuple[Status, ...], since: bytes,
                                until: bytes, limit: int) -> list[tuple[bytes, Delivery | None]]:
        """A bulk replay's executions, oldest first, made from `since` up to `until` (ids):
        each one's id and its stored delivery (None when its request is no longer stored).
        One range read of an index (the dialect's store picks which), then each intake batch
        read once (the ids of one batch come together) and only its wanted deliveries decoded."""
        found: list[tuple[bytes, Delivery | None]] = []
        rows = await self.store.replay_candidates(workflow, statuses, since, until, limit)
        for seq, of_batch in groupby(rows, key=lambda row: row[1]):
            of_batch = list(of_batch)
            fetched = await self._read("intake_batch", (seq,))
            wanted = {index for _, _, index in of_batch}
            stored = {d.id: d for d in batch_codec.decode(fetched[0][0], only=wanted)} if fetched else {}
            found.extend((id_, stored.get(id_)) for id_, _, _ in of_batch)
        return found

    async def scan_executions(self, matches: Callable[[Delivery], bool], workflow: str | None,
                              status: Status | None, limit: int, before: bytes | None,
                              bound: int, resume: tuple[int, int] | None = None
                              ) -> tuple[list[ExecutionRecord], tuple[int, int] | None]:
        """The executions whose stored request `matches` (a field of the request no index holds:
        its request id, its dedup key, its body), among at most `bound` stored requests made
        before `before` (a bound every page keeps), in the intake's order, newest batch first:
        what it found and where a next page goes on from, `(seq, index)` of the last request it
        read (None when nothing older is stored), which `resume` takes.  A position, not an id: with several processes
        the ids of two batches interleave, and a page that stopped at an id would skip the newer
        ids of an older batch.  The cost is that bound: the intake's rows read newest
        first (about SCAN_READ_BYTES of them a read, at least one row), each delivery's
        metadata decoded and given to `matches`, and one primary-key read per match.

        What it holds the event loop for: it lets the loop run whenever the deliveries given
        to `matches` since it last did reach SCAN_STEP_DELIVERIES or their bodies
        SCAN_STEP_BYTES, so a step parses at most that many bytes plus one body, however large
        the batches.  Measured here (CPU of the loop's thread, a `data.` filter): 0.3-0.6 ms a
        step with 100 KB JSON bodies, about 1 ms with 200-byte ones, and a full batch's
        metadata, decoded in one go, about 1 ms.  Not bounded by it: a row's blob comes in
        whole, copied while the GIL is held (SQLite's reader thread) or on the loop itself
        (asyncpg): with SQLite 0.5-1 ms per MB (a batch of 1000 bodies of 100 KB: 55-120 ms);
        reading big rows one at a time keeps that to one batch's blob."""
        found: list[ExecutionRecord] = []
        scanned, page = 0, 1
        before_seq = resume[0] + 1 if resume is not None else None
        step_bytes = step_deliveries = 0
        while True:
            rows = await self._read("intake_scan", (before, before_seq, page))
            if not rows:
                return found, None
            page = max(1, min(SCAN_PAGE, SCAN_READ_BYTES * len(rows) // max(1, sum(len(blob) for _, blob in rows))))
            for seq, blob in rows:
                before_seq = seq
                below = resume[1] if resume is not None and seq == resume[0] else None
                for index, d in batch_codec.newest_first(blob, below):
                    if step_bytes >= SCAN_STEP_BYTES or step_deliveries >= SCAN_STEP_DELIVERIES:
                        await asyncio.sleep(0)
                        step_bytes = step_deliveries = 0
                    step_deliveries += 1
                    if before is not None and d.id >= before:
                        continue
                    scanned += 1
                    step_bytes += len(d.body)
                    if (workflow is None or d.workflow == workflow) and matches(d):
                        record = await self._record_of(d)
                        if status is None or record.status == status:
                            found.append(record)
                            if len(found) >= limit:
                                return found, (seq, index)
                    if scanned >= bound:
                        return found, (seq, index)

    async def _record_of(self, d: Delivery) -> ExecutionRecord:
        """A stored delivery's execution: its row with the request in hand, or queued."""
        rows = await self._read("get_execution", (d.id,))
        return await self._record(rows[0], delivery=d) if rows else _queued(d, None)

    async def _record(self, row: tuple, with_request: bool = True, delivery: Delivery | None = None) -> ExecutionRecord:
        (id_, workflow, version, status, dedup_key, duplicate_of, created, started, finished,
         attempts, error, seq, index) = row
        request, body, failure_of, replay_of = None, b"", None, None
        if delivery is not None:
            request, body, failure_of, replay_of = delivery.request, delivery.body, delivery.failure_of, delivery.replay_of
        elif with_request:
            fetched = await self._read("intake_batch", (seq,))
            if fetched:
                deliveries = batch_codec.decode(fetched[0][0], only=index)
                if deliveries:
                    found = deliveries[0]
                    request, body, failure_of, replay_of = found.request, found.body, found.failure_of, found.replay_of
        return ExecutionRecord(id_, workflow, version, Status(status), dedup_key, duplicate_of, created,
                               started, finished, attempts, error, request, body,
                               failure_of=failure_of, replay_of=replay_of)


def _queued(d: Delivery, jobs: list | None) -> ExecutionRecord:
    return ExecutionRecord(d.id, d.workflow, d.version, Status.QUEUED, d.dedup_key, None,
                           d.request.received_at, None, None, 0, None, d.request, d.body, jobs, d.failure_of,
                           d.replay_of)
