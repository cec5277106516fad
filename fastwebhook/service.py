"""The running service: store, writer, queue, dedup cache and metrics, and the executions.

Everything here is per process.  `Service.start()` opens the store, warms the dedup cache, claims
the work a crashed predecessor left behind, and starts the writer, the workers and the lease
keeper; `stop()` undoes that in the order that loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from .config import Config, Workflow
from .door.context import UNPARSED, build_context
from .door.dedup import DedupCache
from .workflow.runner import Outcome, Run, encode_result, run_workflow
from .errors import StoreError
from .http.messages import Response
from .ids import to_text
from .intake.writer import Writer
from .metrics import Metrics
from .store import open_store
from .store.base import FINAL_STATUSES, ClaimedExecution, Job, Store, Transition
from .workflow.templates import render_value
from .intake.workers import Work, WorkQueue, new_owner, owner_is_dead

LEASE_SECONDS = 30.0
RESOLVED_EMPTY = Outcome("resolved", None, [], None)
SWEEP_EVERY = 1.0
PURGE_EVERY = 3600.0


class Service:
    def __init__(self, config: Config, *, store: Store | None = None, clock=time.time):
        self.config = config
        self.clock = clock
        self.log = logging.getLogger("fastwebhook")
        self.metrics = Metrics()
        self.store = store or open_store(config.storage)
        self.writer = Writer(self.store, self.metrics, clock)
        self.queue = WorkQueue(config.queue.capacity, config.queue.workers, self.execute)
        self.dedup = DedupCache()
        # executions whose commit is in flight -> callbacks of repeats waiting on that commit
        self.uncommitted: dict[bytes, list] = {}
        self.owner = new_owner()
        self.lease = LEASE_SECONDS
        self.durable = config.storage.durability == "commit"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store_ok = False
        self.stopping = False
        self._tasks: list[asyncio.Task] = []
        self._dead_owners: tuple[str, ...] = ()
        # metric children per workflow, prepared here rather than looked up per execution
        self.execution_stats = {key: ExecutionStats(self.metrics, key) for key in config.workflows}
        self.metrics.queue_depth = lambda: self.queue.load
        self.metrics.queue_capacity = config.queue.capacity

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.store.open()
        self.store_ok = True
        now = self.clock()
        for key_hash, execution, expires_at in await self.store.live_dedup(now, self.dedup.capacity):
            self.dedup.put(key_hash, execution, expires_at)
        owners = await self.store.pending_owners()
        self._dead_owners = tuple(o for o in owners if owner_is_dead(o, self.owner))
        self.writer.start()
        self.queue.start()
        await self.sweep()
        loop = self.loop
        self._tasks = [loop.create_task(self._every(SWEEP_EVERY, self.sweep), name="fastwebhook-sweep"),
                       loop.create_task(self._every(self.lease / 3, self.renew), name="fastwebhook-lease"),
                       loop.create_task(self._every(PURGE_EVERY, self.purge), name="fastwebhook-purge")]

    async def stop(self, grace: float = 10.0) -> None:
        """Finish running executions up to `grace`; the queued rest stays in the store, its
        lease released so the next start takes it at once."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.queue.stop(grace)
        await self.writer.stop()
        try:
            await self.store.renew(self.owner, 0.0)
        except StoreError as exc:
            self.log.warning("could not release leases: %s", exc)
        await self.store.close()

    async def _every(self, seconds: float, job) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except StoreError as exc:
                self.store_ok = False
                self.log.warning("%s failed: %s", job.__name__, exc)
            else:
                self.store_ok = True

    async def sweep(self) -> None:
        """Claim pending work whose lease lapsed (or whose owner died) while there is room."""
        queue = self.queue
        room = min(queue.room, 1000)
        if room <= 0 or self.stopping:
            return
        queue.load += room  # hold the slots across the await, so requests cannot take them
        try:
            now = self.clock()
            claimed = await self.store.claim(self.owner, now, now + self.lease, room, self._dead_owners)
        finally:
            queue.load -= room
        for row in claimed:
            queue.load += 1
            queue.push(self._work_from_row(row))

    async def renew(self) -> None:
        if self.queue.load:
            await self.store.renew(self.owner, self.clock() + self.lease)

    async def purge(self) -> None:
        removed = await self.store.purge(self.clock() - self.config.storage.retention)
        if removed:
            self.log.info("purged %d executions older than the retention", removed)

    def _work_from_row(self, row: ClaimedExecution) -> Work:
        meta = orjson.loads(row.request)
        workflow = self.config.workflows.get(row.workflow)
        context = build_context(UNPARSED, meta["headers"], b"", meta.get("params", {}), meta["method"],
                                meta["path"], meta.get("ip", ""), meta["received_at"], row.body,
                                self.config.server.max_body_size)
        context["query"] = meta.get("query", {})
        return Work(row.id, to_text(row.id), workflow, context)

    # -- executions ---------------------------------------------------------------------------
    async def execute(self, work: Work) -> None:
        started = self.clock()
        writer = self.writer
        workflow: Workflow | None = work.workflow
        try:
            if workflow is None:
                outcome, run = Outcome("error", "its workflow no longer exists", [], None), None
            elif not workflow.nodes and work.reply is None:
                # nothing to run and nobody to answer: resolved, without building a Run
                outcome, run = RESOLVED_EMPTY, None
            else:
                writer.transition(Transition(work.id, "started", started))
                run = Run(work.id_text, workflow, work.context, self.config.env)
                outcome = await run_workflow(run, self.metrics.node_duration)
        except Exception as exc:  # noqa: BLE001 - recorded as the execution's error
            self.log.exception("execution %s failed inside the runner", work.id_text)
            outcome, run = Outcome("error", f"internal error: {exc}", [], None), None
        finished = self.clock()
        writer.transition(Transition(work.id, outcome.status, started, finished, outcome.error))
        if outcome.jobs:
            writer.add_jobs([
                Job(work.id, position, job.node, job.type, job.status, encode_result(job.result),
                    job.error, orjson.dumps(job.logs) if job.logs else None, job.duration_ms)
                for position, job in enumerate(outcome.jobs)])
        self._stats(workflow.key if workflow else "-").finished(outcome.status, finished - started)
        self.queue.release()
        if work.reply is not None and not work.reply.done():
            work.reply.set_result(self.sync_response(work, outcome, run))

    def sync_response(self, work: Work, outcome: Outcome, run: Run | None) -> Response:
        id_header = ((b"x-execution-id", work.id_text.encode()),)
        if outcome.status != "resolved":
            return Response.json(500, {"execution_id": work.id_text, "status": outcome.status,
                                       "error": outcome.error}, id_header)
        answer: dict[str, Any] = outcome.response or {}
        configured = work.workflow.response
        if not answer:
            answer = {"status": configured.status, "headers": dict(configured.headers),
                      "body": render_value(configured.body, run.scope) if run else configured.body}
        return _response_from(answer, id_header)

    def _stats(self, key: str) -> "ExecutionStats":
        stats = self.execution_stats.get(key)
        if stats is None:
            stats = self.execution_stats[key] = ExecutionStats(self.metrics, key)
        return stats

    def await_sync(self, work: Work, answer: asyncio.Future) -> None:
        """Past `sync_timeout` the sender gets 202 (or 504) and the execution goes on."""
        workflow = work.workflow

        def timed_out() -> None:
            if answer.done():
                return
            status = 504 if workflow.on_sync_timeout == "error" else 202
            answer.set_result(Response.json(status, {"execution_id": work.id_text, "status": "started"},
                                            ((b"x-execution-id", work.id_text.encode()),)))

        handle = self.loop.call_later(workflow.sync_timeout, timed_out)
        answer.add_done_callback(lambda _: handle.cancel())


class ExecutionStats:
    """One workflow's executions_total children (by status) and its duration histogram."""

    __slots__ = ("by_status", "duration")

    def __init__(self, metrics: Metrics, key: str):
        self.by_status = {status: metrics.executions.slot(key, status) for status in FINAL_STATUSES}
        self.duration = metrics.execution_duration.slot(key)

    def finished(self, status: str, seconds: float) -> None:
        self.by_status[status].value += 1
        self.duration.observe(seconds)


def _response_from(answer: dict, extra_headers: tuple) -> Response:
    body = answer.get("body", "")
    headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
    content_type = headers.pop("content-type", None)
    if isinstance(body, (dict, list)):
        payload, content_type = orjson.dumps(body), content_type or "application/json"
    else:
        payload = ("" if body is None else str(body)).encode()
        content_type = content_type or "text/plain; charset=utf-8"
    headers.pop("content-length", None)
    encoded = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    status = answer.get("status", 200)
    return Response(status if isinstance(status, int) else 200, payload, content_type.encode("latin-1"),
                    encoded + extra_headers)
