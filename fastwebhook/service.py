"""The running service: store, intake, dispatcher, workers, metrics, and the executions.

Everything here is per process.  `start()` opens the store, counts the durable queue, rebuilds
the door's dedup window, and starts the supervised writer, dispatcher and lease keeper; `stop()`
undoes that in the order that loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Callable

import orjson

from .config import Config, Workflow, with_stored
from .door.context import context_of
from .intake.dedup import DoorCache
from .errors import StoreError
from .http import Response
from .ids import to_text
from .intake.dispatch import Dispatcher
from .intake.gate import Gate
from .intake.intake import Intake, Outcome as IntakeOutcome
from .intake.workers import WorkerPool
from .metrics import Metrics, SharedCells
from .store import Store, open_store
from .store.rows import FINAL, Claim, Delivery, Final, Status
from .supervisor import Supervisor
from .workflow.resources import Resources
from .workflow.runner import Outcome, Run, job_rows, run_workflow
from .workflow.templates import compile_value, render_value, stringify

PURGE_EVERY = 3600.0
PURGE_FIRST = 60.0          # seconds after a start: a server down for long may hold much that expired
PURGE_BATCH = 500           # executions (and as many intake, request-log rows) per transaction
PURGE_PAUSE = 0.005         # between two of them: the appends and claims go first
DEDUP_SLICES = 256          # the expired dedup keys go a slice of the hash space per transaction
_DEDUP_SLICE = (1 << 64) // DEDUP_SLICES
REJECTIONS_EVERY = 60.0     # seconds between two summaries of the requests refused
CHECKPOINT_EVERY = 0.5
DEPTH_EVERY = 1.0           # seconds between two counts of the shared queue (several processes or hosts)


class Service:
    def __init__(self, config: Config, *, store: Store | None = None, clock=time.time, worker=None):
        self.config = config
        self.clock = clock
        self.log = logging.getLogger("fastwebhook")
        self.worker = worker            # one of several processes sharing the store, or None
        self.metrics = Metrics(SharedCells(worker.metrics_dir) if worker is not None else None)
        self.store = store or open_store(config.storage, shared=worker is not None)
        self.supervisor = Supervisor()
        self.intake = Intake(self.store, self.metrics, config.queue.capacity,
                             config.storage.durability == "commit", DoorCache(), clock)
        self.order_keys = _order_keys(config)
        self.pool = WorkerPool(config.queue.workers, self.execute, self._gate(config))
        self.resources = Resources(self.store, config.channels, config.collections)
        self.dispatcher = Dispatcher(self.store, self.intake, self.pool, runs_nothing=_runs_nothing(config),
                                     settled=self._settled, clock=clock, lease=config.queue.lease)
        self.intake.owner = self.dispatcher.owner
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        # metric children per workflow, prepared here rather than looked up per execution
        self.execution_stats = {key: ExecutionStats(self.metrics, key) for key in config.workflows}
        self.metrics.queue_depth = lambda: self.intake.depth
        self.metrics.queue_capacity = config.queue.capacity
        self._rejections_seen: dict[tuple, int] = {}
        self.stored_signature: tuple | None = None   # the stored workflows' as start read them
        # several processes: the answer for a sync sender another process holds goes to it
        self.forward_reply: Callable[[bytes, Response], None] | None = None

    @property
    def healthy(self) -> bool:
        return self.supervisor.healthy and self.intake.healthy

    def _gate(self, config: Config) -> Gate | None:
        gated = any(w.order_key or w.concurrency for w in config.workflows.values())
        return Gate(self.order_key_of, self._concurrency) if gated else None

    async def reload(self, config: Config) -> None:
        """A reloaded config in force (its [server], [storage] and [queue] are the running
        ones: they take a restart).  What it needs of the store comes first, so a failure
        leaves the old config in force; then every lookup switches at once: executions that
        start from now on get the new workflows, those running finish on theirs."""
        await self.store.ensure_collections(config.collections.values())
        self._use(config)

    def _use(self, config: Config) -> None:
        self.config = config
        self.order_keys = _order_keys(config)
        if self.pool.gate is None:   # a gate that has nothing to do costs little: it stays
            self.pool.gate = self._gate(config)
        self.dispatcher.runs_nothing = _runs_nothing(config)
        self.resources.channels, self.resources.collections = config.channels, config.collections

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.store.open()
        self.stored_signature = await self.store.workflows_signature()   # before them: see Server
        self._use(await self.with_stored(self.config))   # before the first claim: they may have work queued
        self.intake.depth = await self.store.unfinished()
        cache = self.intake.cache
        live = await self.store.live_keys(self.clock(), cache.capacity + 1)
        for key_hash, execution, expires_at in reversed(live[:cache.capacity]):
            cache.put(key_hash, execution, expires_at)
        # Complete: it holds every live key, so a miss is new.  Never so with other hosts (or
        # other worker processes) taking keys too: a miss is then checked against the shared
        # index, once per group commit.
        cache.complete = len(live) <= cache.capacity and not self.store.shared_by_hosts and self.worker is None
        await self.dispatcher.find_dead_owners()
        await self.resources.start(self.supervisor)
        self.pool.start()
        supervise = self.supervisor
        supervise.start("writer", self.intake.run)
        supervise.start("dispatcher", self.dispatcher.run)
        supervise.every("lease", self.config.queue.lease / 3, self.dispatcher.renew)
        if self.worker is None or self.worker.leader:
            supervise.every("purge", PURGE_EVERY, self.purge, first=PURGE_FIRST)
            supervise.every("checkpoint", CHECKPOINT_EVERY, self.store.checkpoint)
        if self.worker is not None or self.store.shared_by_hosts:
            supervise.every("depth", DEPTH_EVERY, self.count_depth)
        supervise.every("rejections", REJECTIONS_EVERY, self.report_rejections)

    async def with_stored(self, config: Config) -> Config:
        """`config` (as the file has it) with the workflows stored through the admin API; a
        stored one that does not load is left out, and the log says why."""
        config, refused = with_stored(config, await self.store.stored_workflows())
        for key, errors in refused.items():
            self.log.error("a workflow stored through the admin API was not loaded", extra={
                "workflow": key, "errors": [str(error) for error in errors]})
        if config.shadowed:
            self.log.warning("workflows stored through the admin API are hidden by the config file's of the "
                             "same key", extra={"workflows": list(config.shadowed), "config": config.source})
        return config

    async def stop(self, grace: float = 10.0) -> None:
        """Finish running executions up to `grace`; the queued rest stays in the store, its
        lease released so the next start takes it at once."""
        self.stopping = True
        self.dispatcher.stopping = True
        await self.pool.stop(grace)
        await self.supervisor.stop("lease", "purge", "checkpoint", "writer")
        await self.supervisor.stop()
        await self.resources.close()
        try:
            await self.dispatcher.release()
        except StoreError as exc:
            self.log.warning("could not release leases: %s", exc)
        await self.store.close()

    async def drain(self) -> None:
        """Until everything offered so far is committed and every record so far is written."""
        await self.intake.drain()
        await self.dispatcher.flush()

    async def count_depth(self) -> None:
        """With several processes or hosts, each acknowledges deliveries that others may run:
        the depth (the queue's bound) is counted again from the store, which holds them all,
        plus what this process has not committed yet."""
        intake = self.intake
        before, uncommitted = intake.depth, intake.uncommitted
        counted = await self.store.unfinished()
        intake.depth = counted + uncommitted + (intake.depth - before)   # what changed meanwhile kept

    async def purge(self) -> None:
        """Everything older than the retention, in short transactions with pauses between them,
        so that the intake's appends and the claims get the store in between (a purge of a
        week's backlog in one transaction would hold the write lock for seconds)."""
        now = self.clock()
        before = now - self.config.storage.retention
        executions = rows = 0
        started = time.monotonic()
        for index in range(DEDUP_SLICES):   # at least one walk over the dedup hash space
            low = -(1 << 63) + index * _DEDUP_SLICE
            slice_ = (low, low + _DEDUP_SLICE - 1)   # both ends in: the last one ends at 2**63 - 1
            more = True
            while more:
                removed_executions, removed, more = await self.store.purge_batch(before, PURGE_BATCH, slice_, now)
                executions, rows = executions + removed_executions, rows + removed
                await asyncio.sleep(PURGE_PAUSE)
                slice_ = (1, 0)   # this slice is done (an empty range); the other tables go on
        if rows:
            self.log.info("purged what is older than the retention", extra={
                "executions": executions, "rows": rows, "seconds": round(time.monotonic() - started, 3)})

    async def report_rejections(self) -> None:
        """One log line summing the requests refused since the last one, by workflow and
        reason: a flood of bad signatures is one line a minute, not one a request."""
        counts = {values: slot.value for values, slot in self.metrics.rejected.slots.items()}
        seen, self._rejections_seen = self._rejections_seen, counts
        new = {f"{workflow or '-'}/{reason}": count - seen.get((workflow, reason), 0)
               for (workflow, reason), count in counts.items() if count > seen.get((workflow, reason), 0)}
        if new:
            self.log.info("rejected requests", extra={"total": sum(new.values()), "by_workflow_and_reason": new})

    async def submit(self, delivery: Delivery) -> None:
        """A delivery from inside (a replay), through the intake like any webhook: counted,
        committed, claimed.  Raises StoreError when it was not accepted."""
        done = self.loop.create_future()

        def settle(outcome: IntakeOutcome) -> None:
            if not done.done():
                done.set_result(outcome)

        outcome = self.intake.offer(delivery, settle) or await done
        if outcome.kind != IntakeOutcome.ACCEPTED:
            reason = "the queue is full" if outcome.kind == IntakeOutcome.QUEUE_FULL else "the store is unavailable"
            raise StoreError(f"not accepted: {reason}")

    def _settled(self, claim: Claim) -> None:
        """A claim resolved some deliveries itself and found others duplicates."""
        for delivery in claim.resolved:
            self._stats(delivery.workflow).finished(Status.RESOLVED, 0.0)
        for delivery, original in claim.duplicates:
            self._stats(delivery.workflow).finished(Status.DUPLICATE, 0.0)
            reply = self._reply_for(delivery, self.config.workflows.get(delivery.workflow))
            if reply is not None and not reply.done():
                text = to_text(original)
                reply.set_result(Response.json(200, {"execution_id": text, "status": "duplicate"},
                                               _id_header(text)))
        self.intake.release(len(claim.resolved) + len(claim.duplicates))

    # -- executions ---------------------------------------------------------------------------
    async def execute(self, delivery: Delivery) -> None:
        started = self.clock()
        dispatcher = self.dispatcher
        workflow: Workflow | None = self.config.workflows.get(delivery.workflow)
        reply = self._reply_for(delivery, workflow)
        run = None
        id_text = to_text(delivery.id)
        try:
            if workflow is None:
                outcome = Outcome("error", "its workflow no longer exists", [], None)
            else:
                dispatcher.change(Final(delivery.id, Status.STARTED, started))
                context = context_of(delivery.request, delivery.body, workflow.max_body_size)
                # a second attempt (the first one's process died) resumes after its committed jobs
                committed = await self.store.committed_jobs(delivery.id) if delivery.attempts > 1 else None
                run = Run(delivery.id, workflow, context, self.config.env, self.resources,
                          committed=committed, on_response=_answerer(reply, id_text) if reply else None)
                outcome = await run_workflow(run, self.metrics.node_duration)
        except Exception as exc:  # noqa: BLE001 - recorded as the execution's error
            self.log.exception("execution %s failed inside the runner", id_text)
            outcome, run = Outcome("error", f"internal error: {exc}", [], None), None
        finished = self.clock()
        try:
            jobs = job_rows(delivery.id, outcome.jobs)
        except (TypeError, ValueError) as exc:  # a result that cannot be recorded ends it as an error
            outcome, jobs = Outcome("error", f"a node's result could not be recorded: {exc}", [], None), []
        dispatcher.change(Final(delivery.id, Status(outcome.status), started, finished, outcome.error))
        if jobs:
            dispatcher.add_jobs(jobs)
        self._stats(delivery.workflow).finished(outcome.status, finished - started)
        self.intake.release()
        if reply is not None and not reply.done():
            try:
                response = self.sync_response(id_text, workflow, outcome, run)
            except ValueError as exc:   # what the [response] table rendered is not a valid answer
                response = Response.json(500, {"execution_id": id_text, "status": "failed", "error": str(exc)},
                                         _id_header(id_text))
            reply.set_result(response)

    def _reply_for(self, delivery: Delivery, workflow: Workflow | None) -> asyncio.Future | None:
        """Where a sync delivery's answer goes: this process's waiting sender, or, with several
        processes, the one that acknowledged it (its sender waits there)."""
        reply = self.intake.replies.pop(delivery.id, None)
        if reply is None and self.forward_reply is not None and workflow is not None and workflow.mode == "sync":
            reply = self.loop.create_future()
            forward = self.forward_reply
            reply.add_done_callback(lambda done: done.cancelled() or forward(delivery.id, done.result()))
        return reply

    def sync_response(self, id_text: str, workflow: Workflow | None, outcome: Outcome, run: Run | None) -> Response:
        id_header = _id_header(id_text)
        if outcome.status != "resolved" or workflow is None:
            return Response.json(500, {"execution_id": id_text, "status": outcome.status,
                                       "error": outcome.error}, id_header)
        answer: dict[str, Any] = outcome.response or {}
        configured = workflow.response
        if not answer:
            scope = run.scope if run else {}
            answer = {"status": configured.status, "headers": render_value(dict(configured.headers), scope),
                      "body": render_value(configured.body, scope)}
        return _response_from(answer, id_header)

    def order_key_of(self, delivery: Delivery) -> str | None:
        """`order_key` rendered against the delivery's $context; None when it has none."""
        template = self.order_keys.get(delivery.workflow)
        workflow = self.config.workflows.get(delivery.workflow)
        if template is None or workflow is None:
            return None
        context = context_of(delivery.request, delivery.body, workflow.max_body_size)
        scope = {"$context": context, "$env": self.config.env, "$workflow": {"key": workflow.key}}
        key = stringify(render_value(template, scope))
        return key or None

    def _concurrency(self, workflow: str) -> int:
        found = self.config.workflows.get(workflow)
        return found.concurrency if found else 0

    def _stats(self, key: str) -> "ExecutionStats":
        stats = self.execution_stats.get(key)
        if stats is None:
            stats = self.execution_stats[key] = ExecutionStats(self.metrics, key)
        return stats

    def await_sync(self, id_text: str, workflow: Workflow, answer: asyncio.Future) -> None:
        """Past `sync_timeout` the sender gets 202 (or 504) and the execution goes on."""
        def timed_out() -> None:
            if answer.done():
                return
            status = 504 if workflow.on_sync_timeout == "error" else 202
            answer.set_result(Response.json(status, {"execution_id": id_text, "status": "started"},
                                            _id_header(id_text)))

        handle = self.loop.call_later(workflow.sync_timeout, timed_out)
        answer.add_done_callback(lambda _: handle.cancel())


def _order_keys(config: Config) -> dict:
    return {key: compile_value(w.order_key) for key, w in config.workflows.items() if w.order_key}


def _runs_nothing(config: Config):
    """Whether the claim resolves a workflow's deliveries itself: no node, nobody waiting."""
    return frozenset(key for key, w in config.workflows.items() if not w.nodes and w.mode != "sync").__contains__


class ExecutionStats:
    """One workflow's executions_total children (by status) and its duration histogram."""

    __slots__ = ("by_status", "duration")

    def __init__(self, metrics: Metrics, key: str):
        self.by_status = {status.value: metrics.executions.slot(key, status.value) for status in FINAL}
        self.duration = metrics.execution_duration.slot(key)

    def finished(self, status: str, seconds: float) -> None:
        self.by_status[status].value += 1
        self.duration.observe(seconds)


def _id_header(id_text: str) -> tuple:
    return ((b"x-execution-id", id_text.encode()),)


def _answerer(reply: asyncio.Future, id_text: str):
    """Sync mode: the response node's answer goes out at once; the workflow goes on.  An answer
    that is not valid HTTP fails the node (ValueError), and the caller gets the 500."""
    def answer(response: dict) -> None:
        if not reply.done():
            reply.set_result(_response_from(response, _id_header(id_text)))
    return answer


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    """One rendered header, or ValueError: a value from webhook data must not add headers of its
    own (CR / LF) or carry what HTTP/1.1 cannot."""
    if not _TOKEN.match(name):
        raise ValueError(f"response header name {name!r} is not a valid HTTP token")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"response header {name!r}: a value may not hold line breaks")
    try:
        return name.encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"response header {name!r}: {value[:40]!r} has characters HTTP headers cannot carry "
                         "(Latin-1 only)") from None


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
    encoded = tuple(_header(k, v) for k, v in headers.items())
    status = answer.get("status", 200)
    return Response(status if isinstance(status, int) else 200, payload, _header("content-type", content_type)[1],
                    encoded + extra_headers)
