"""The admin API's and the CLI's reads over a Store: executions and the request log, as they
show them.  On the store's read-only connection (`read_alone`), never on the one that commits
the intake's appends, each statement within the statement budget."""

from __future__ import annotations

from . import batch_codec
from .base import Store
from .rows import Delivery, ExecutionRecord, Job, RequestLine, Status


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

    async def _record(self, row: tuple, with_request: bool = True) -> ExecutionRecord:
        (id_, workflow, version, status, dedup_key, duplicate_of, created, started, finished,
         attempts, error, seq, index) = row
        request, body, failure_of = None, b"", None
        if with_request:
            fetched = await self._read("intake_batch", (seq,))
            if fetched:
                deliveries = batch_codec.decode(fetched[0][0], only=index)
                if deliveries:
                    request, body, failure_of = deliveries[0].request, deliveries[0].body, deliveries[0].failure_of
        return ExecutionRecord(id_, workflow, version, Status(status), dedup_key, duplicate_of, created,
                               started, finished, attempts, error, request, body, failure_of=failure_of)


def _queued(d: Delivery, jobs: list | None) -> ExecutionRecord:
    return ExecutionRecord(d.id, d.workflow, d.version, Status.QUEUED, d.dedup_key, None,
                           d.request.received_at, None, None, 0, None, d.request, d.body, jobs, d.failure_of)
