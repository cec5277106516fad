"""The worker pool: a fixed number of tasks running claimed executions.

Workers catch per execution and never die of one; what an execution leaves behind goes to the
dispatcher's records, written in batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable

from ..store.rows import Delivery
from .gate import Gate

log = logging.getLogger("fastwebhook.workers")
YIELD_EVERY = 64            # executions a worker runs back to back before letting I/O in


class WorkerPool:
    def __init__(self, workers: int, execute: Callable[[Delivery], Awaitable[Any]], gate: Gate | None = None):
        self.workers = workers
        self.execute = execute
        self.gate = gate              # order_key lanes and concurrency caps, when any workflow has them
        self.ready: deque[Delivery] = deque()
        self.idle: deque[asyncio.Future] = deque()
        self.running = 0
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
        while self.idle:
            waiter = self.idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker(), name=f"fastwebhook-worker-{i}")
                       for i in range(self.workers)]

    async def stop(self, grace: float) -> list[Delivery]:
        """Let running executions finish up to `grace` seconds; returns those never started
        (they stay queued in the store)."""
        left = list(self.ready)
        self.ready.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.running and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return left

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        ran = 0
        while True:
            if not self.ready:
                waiter = loop.create_future()
                self.idle.append(waiter)
                await waiter
                continue
            delivery = self.ready.popleft()
            self.running += 1
            try:
                await self.execute(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a worker never dies of one execution
                log.exception("execution %s crashed its worker step", delivery.id.hex())
            finally:
                self.running -= 1
                if self.gate is not None:
                    for released in self.gate.finish(delivery):
                        self._ready(released)
            ran += 1
            if ran % YIELD_EVERY == 0:
                await asyncio.sleep(0)
