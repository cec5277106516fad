"""The worker pool: a fixed number of tasks running claimed executions in cohorts.

A worker takes a cohort off the ready queue: the oldest ready delivery and up to COHORT_MAX - 1
more of the same workflow (the others keep their places), and runs them together, each node
once for the cohort.  Several workers, so that a slow cohort (one waiting on an outside call)
holds up only itself.  Workers catch per cohort and never die of one; what executions leave
behind goes to the dispatcher's records, written in batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable

from ..store.rows import Delivery, body_bytes
from .gate import Gate

log = logging.getLogger("fastwebhook.workers")
COHORT_MAX = 256            # executions of one workflow a worker runs together
SCAN_MAX = 4 * COHORT_MAX   # ready deliveries looked through for a cohort's companions
YIELD_EVERY = 64            # executions a worker runs back to back before letting I/O in


class WorkerPool:
    def __init__(self, workers: int, execute_cohort: Callable[[list[Delivery]], Awaitable[Any]] | None,
                 gate: Gate | None = None):
        self.workers = workers
        self.execute_cohort = execute_cohort    # deliveries of one workflow, together
        self.gate = gate              # order_key lanes and concurrency caps, when any workflow has them
        self.ready: deque[Delivery] = deque()
        self.idle: deque[asyncio.Future] = deque()
        self.running = 0
        self.held_bytes = 0           # bodies of the ready and running deliveries
        self._waking = 0              # idle workers woken that have not taken their cohort yet
        self._tasks: list[asyncio.Task] = []

    @property
    def backlog(self) -> int:
        return len(self.ready) + self.running + (self.gate.waiting if self.gate else 0)

    def push(self, delivery: Delivery) -> None:
        if self.gate is not None and not self.gate.admit(delivery):
            return   # it waits for its lane or a slot; `finish` hands it back
        self._ready(delivery)

    def _ready(self, delivery: Delivery) -> None:
        self.ready.append(delivery)
        self.held_bytes += len(delivery.body)
        # one woken worker per COHORT_MAX ready: a claim's batch is not 64 wake-ups for one cohort
        if self.idle and self._waking * COHORT_MAX < len(self.ready):
            self._wake_one()

    def _wake_one(self) -> None:
        while self.idle:
            waiter = self.idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return

    def start(self) -> None:
        self._waking = 0
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"fastwebhook-worker-{i}")
                       for i in range(self.workers)]

    async def stop(self, grace: float) -> list[Delivery]:
        """Let running executions finish up to `grace` seconds; returns those never started
        (they stay queued in the store)."""
        left = list(self.ready)
        self.ready.clear()
        self.held_bytes -= body_bytes(left)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.running and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return left

    def _take(self) -> list[Delivery]:
        """The oldest ready delivery and the ready ones of its workflow after it (up to
        COHORT_MAX, among the next SCAN_MAX); the others stay where they were."""
        ready = self.ready
        head = ready.popleft()
        cohort = [head]
        if not ready:
            return cohort
        workflow = head.workflow
        passed: list[Delivery] = []
        scanned = 0
        while ready and len(cohort) < COHORT_MAX and scanned < SCAN_MAX:
            delivery = ready.popleft()
            scanned += 1
            (cohort if delivery.workflow == workflow else passed).append(delivery)
        ready.extendleft(reversed(passed))
        return cohort

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        ran = 0
        while True:
            if not self.ready:
                waiter = loop.create_future()
                self.idle.append(waiter)
                await waiter
                self._waking -= 1
                continue
            cohort = self._take()
            if self.ready and self.idle and self._waking * COHORT_MAX < len(self.ready):
                self._wake_one()   # another workflow's (or more of this one's) wait behind it
            self.running += len(cohort)
            try:
                await self.execute_cohort(cohort)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a worker never dies of one cohort
                log.exception("a cohort of %d executions (the first %s) crashed its worker step",
                              len(cohort), cohort[0].id.hex())
            finally:
                self.running -= len(cohort)
                self.held_bytes -= body_bytes(cohort)
                if self.gate is not None:
                    for delivery in cohort:
                        for released in self.gate.finish(delivery):
                            self._ready(released)
            ran += len(cohort)
            # An idle worker's frame would keep its last cohort (bodies and all) alive: with 64
            # workers that was ~9,000 finished deliveries, ~30 MiB.
            del cohort
            if ran >= YIELD_EVERY:
                ran = 0
                await asyncio.sleep(0)
