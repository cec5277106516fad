"""The running service, per process: the door side, the work side and maintenance, wired.

- the door side (door/): the intake's group commit, the admission (room in the queue, or a
  sender held for it) and what every trigger shares (`Door`);
- the work side (intake/): the dispatcher's claims and records, the worker pool, the
  executions, and the resources nodes use;
- maintenance (maintenance.py): checkpoint, purge, recounts, summaries.

How the loop and the store's thread are shared between the two sides is one rule, in
intake/balance.py.  `start()` opens the store, counts the durable queue, rebuilds the door's
dedup window, and starts the supervised writer, dispatcher and lease keeper; `stop()` undoes
that in the order that loses nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter

import orjson

from ..config.model import Config, Durability, Mode
from ..config.loader import with_stored
from ..door.admission import QUEUE_FULL, Admission
from ..door.context import context_of
from ..door.door import Door
from ..core.errors import StoreError
from ..intake.balance import Balance
from ..intake.dedup import DoorCache
from ..intake.dispatch import Dispatcher
from ..intake.executions import Executions
from ..intake.gate import Gate
from ..intake.intake import Intake, Offered, Receipt
from ..intake.workers import WorkerPool
from ..http.messages import Request, Response
from .maintenance import Maintenance
from ..observe.metrics import Metrics, SharedCells
from ..store import Store, open_store
from ..store.rows import Delivery
from .tasks import TaskSupervisor
from ..workflow.resources import Resources
from ..workflow.templates import compile_value, render_value, stringify


class Service:
    def __init__(self, config: Config, *, store: Store | None = None, clock=time.time, worker=None):
        self.config = config
        self.clock = clock
        self.log = logging.getLogger("fastwebhook")
        self.worker = worker            # one of several processes sharing the store, or None
        self.metrics = Metrics(SharedCells(worker.metrics_dir) if worker is not None else None)
        self.store = store or open_store(config.storage, shared=worker is not None)
        self.supervisor = TaskSupervisor()
        current = lambda: self.config   # noqa: E731 - the config in force, swapped by a reload
        # the door side
        self.intake = Intake(self.store, self.metrics, config.queue.capacity,
                             config.storage.durability == Durability.COMMIT, DoorCache(), clock)
        # the work side
        self.order_keys = _order_keys(config)
        self.resources = Resources(self.store, config.channels, config.collections, config.outbound.deny)
        # (the pool's and the dispatcher's callbacks are wired below: Executions records through
        # the dispatcher)
        self.pool = WorkerPool(config.queue.workers, None, self._gate(config))
        balance = Balance(self.intake, lambda: self.admission.holding)
        self.dispatcher = Dispatcher(self.store, self.intake, self.pool, balance, runs_nothing=_runs_nothing(config),
                                     settled=None, clock=clock, lease=config.queue.lease)
        self.executions = Executions(current, self.intake, self.dispatcher, self.store, self.resources,
                                     self.metrics, clock)
        self.pool.execute_cohort, self.dispatcher.settled = self.executions.execute_cohort, self.executions.settled
        self.intake.owner = self.dispatcher.owner
        self.intake.runs_nothing = self.dispatcher.runs_nothing
        # the door's admission and what the triggers share
        self.admission = Admission(self.intake, self.metrics, self.dispatcher.log_request, config.queue.hold,
                                   _shares(config))
        self.door = Door(self.intake, self.admission, self.metrics, self.dispatcher.log_request,
                         config.server.tls_enabled)
        self.maintenance = Maintenance(self.store, self.intake, self.metrics, current, clock)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.execution_stats = self.executions.stats
        for key in config.workflows:
            self.executions.stats_of(key)
        self.metrics.queue_depth = lambda: self.intake.depth
        self.metrics.queue_capacity = config.queue.capacity
        self.metrics.queue_held = lambda: self.admission.held
        self.stored_signature: tuple | None = None   # the stored workflows' as start read them
        # the group commit's writers: as many as the store takes appends at once
        self.writers = ["writer", *(f"writer-{n}" for n in range(1, self.store.appenders))]

    @property
    def healthy(self) -> bool:
        return self.supervisor.healthy and self.intake.healthy

    def _gate(self, config: Config) -> Gate | None:
        gated = any(w.order_key or w.concurrency for w in config.workflows.values())
        return Gate(self.order_key_of, self._concurrency) if gated else None

    async def reload(self, config: Config) -> None:
        """A reloaded config in force (its [server], [storage], [queue] and [outbound] are the
        running ones: they take a restart).  What it needs of the store comes first, so a
        failure leaves the old config in force; then every lookup switches at once: executions
        that start from now on get the new workflows, those running finish on theirs."""
        await self.store.ensure_collections(config.collections.values())
        self._use(config)

    def _use(self, config: Config) -> None:
        self.config = config
        self.order_keys = _order_keys(config)
        if self.pool.gate is None:   # a gate that has nothing to do costs little: it stays
            self.pool.gate = self._gate(config)
        self.intake.runs_nothing = self.dispatcher.runs_nothing = _runs_nothing(config)
        self.intake.in_order(bool(self.order_keys))
        self.resources.channels, self.resources.collections = config.channels, config.collections
        self.admission.use(self.admission.hold_for, _shares(config))   # [queue] hold takes a restart

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = self.executions.loop = self.door.loop = asyncio.get_running_loop()
        await self.store.open()
        self.store.mark_served()
        self.stored_signature = await self.store.workflows_signature()   # before them: see Server
        self._use(await self.with_stored(self.config))   # before the first claim: they may have work queued
        self.intake.queued = Counter(await self.store.unfinished_by_workflow())
        self.intake.depth = sum(self.intake.queued.values())
        cache = self.intake.cache
        live = await self.store.live_keys(self.clock(), cache.capacity)
        for key_hash, execution, expires_at in reversed(live):
            cache.put(key_hash, execution, expires_at)
        self.intake.check_misses = self.store.shared_by_hosts or self.worker is not None
        await self.dispatcher.find_dead_owners()
        await self.resources.start(self.supervisor)
        self.pool.start()
        supervise = self.supervisor
        for writer, name in enumerate(self.writers):
            supervise.start(name, functools.partial(self.intake.run, writer))
        supervise.start("dispatcher", self.dispatcher.run)
        supervise.every("lease", self.config.queue.lease / 3, self.dispatcher.renew)
        self.maintenance.start(supervise, leader=self.worker is None or self.worker.leader,
                               shared=self.worker is not None or self.store.shared_by_hosts)

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
        self.admission.close()
        await self.pool.stop(grace)
        await self.supervisor.stop("lease", "purge", "checkpoint", *self.writers)
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
        await self.maintenance.count_depth()

    async def purge(self) -> None:
        await self.maintenance.purge()

    async def report_rejections(self) -> None:
        await self.maintenance.report_rejections()

    async def submit(self, delivery: Delivery) -> None:
        """A delivery from inside (a replay), through the intake like any webhook: counted,
        committed, claimed.  Raises StoreError when it was not accepted."""
        done = self.loop.create_future()

        def settle(outcome: Receipt) -> None:
            if not done.done():
                done.set_result(outcome)

        outcome = self.intake.offer(delivery, settle) or await done
        if outcome.kind != Offered.ACCEPTED:
            reason = "the queue is full" if outcome.kind == Offered.QUEUE_FULL else "the store is unavailable"
            raise StoreError(f"not accepted: {reason}")

    async def submit_many(self, deliveries: list[Delivery], path: str) -> list[str | None]:
        """Deliveries from inside (a bulk replay), through the door's admission like webhooks:
        each goes in when its workflow has room (the queue's capacity, the workflow's share),
        else it waits in that workflow's line for up to [queue] hold and is refused after, as
        a webhook would be (and counted so).  Per delivery, None when it was accepted, else why
        not ("queue full", "shutting down", ...).  `path` is what refusals are logged under."""
        answers = []
        for delivery in deliveries:
            started = time.perf_counter()
            enter = lambda _request, _started, delivery=delivery: self._offer_inside(delivery)  # noqa: E731
            if self.admission.has_room(delivery.workflow):
                answers.append(enter(None, started))
            else:
                request = Request("POST", path.encode(), "-", self.clock(), "-")
                answers.append(self.admission.wait(request, delivery.workflow, enter, started))
        outcomes = []
        for answer in answers:
            response = await answer if isinstance(answer, asyncio.Future) else answer
            outcomes.append(None if response.status == 202 else orjson.loads(response.body)["error"])
        return outcomes

    def _offer_inside(self, delivery: Delivery) -> Response | asyncio.Future:
        """Offer a delivery from inside; 202 once committed, else an error saying why not."""
        def response(outcome: Receipt) -> Response:
            return ACCEPTED if outcome.kind == Offered.ACCEPTED else \
                QUEUE_FULL if outcome.kind == Offered.QUEUE_FULL else STORE_DOWN

        done = self.loop.create_future()

        def settle(outcome: Receipt) -> None:
            if not done.done():
                done.set_result(response(outcome))

        outcome = self.intake.offer(delivery, settle)
        return response(outcome) if outcome is not None else done

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


ACCEPTED = Response(202)
STORE_DOWN = Response.error(500, "the store is unavailable")


def _order_keys(config: Config) -> dict:
    return {key: compile_value(w.order_key) for key, w in config.workflows.items() if w.order_key}


def _runs_nothing(config: Config):
    """Whether the claim resolves a workflow's deliveries itself: no node, nobody waiting."""
    return frozenset(key for key, w in config.workflows.items() if not w.nodes and w.mode != Mode.SYNC).__contains__


def _shares(config: Config) -> dict[str, int]:
    return {key: config.share(w) for key, w in config.workflows.items()}
