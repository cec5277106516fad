"""Group commit: the rows of many requests go to the store in one transaction.

While batch N is being committed the event loop fills batch N+1; when N lands, the callbacks of
its executions run (their 2xx go out, their work is queued).  Under load a batch therefore holds
everything that arrived during one commit, which is what makes `durability = "commit"` cheap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ..errors import StoreError
from ..metrics import Metrics
from ..store.base import Batch, Job, NewExecution, RequestLogEntry, Store, Transition

log = logging.getLogger("fastwebhook.intake")
# (original id if the store says it was a duplicate, error if the commit failed)
Committed = Callable[[bytes | None, Exception | None], None]
MAX_BATCH = 1000            # executions per transaction: bounds the latency of one commit
RETRY_DELAY = 0.25          # after a failed commit, before trying the leftovers again


class Writer:
    def __init__(self, store: Store, metrics: Metrics, clock: Callable[[], float] = time.time):
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.pending = Batch()
        self.callbacks: list[Committed | None] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self.healthy = True
        self.in_flight = 0          # executions in the batch being committed

    @property
    def uncommitted(self) -> int:
        """Executions added and not yet on disk."""
        return len(self.pending.executions) + self.in_flight

    # -- what the loop adds -------------------------------------------------------------------
    def add_execution(self, execution: NewExecution, committed: Committed | None) -> None:
        self.pending.executions.append(execution)
        self.callbacks.append(committed)
        self._poke()

    def log_request(self, entry: RequestLogEntry) -> None:
        self.pending.requests.append(entry)
        self._poke()

    def transition(self, change: Transition) -> None:
        self.pending.transition(change)
        self._poke()

    def add_jobs(self, jobs: list[Job]) -> None:
        self.pending.jobs.extend(jobs)
        self._poke()

    def _poke(self) -> None:
        if not self._wake.is_set():
            self._wake.set()
            self._idle.clear()

    # -- the commit loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fastwebhook-writer")

    async def stop(self) -> None:
        """Commit what is pending, then stop."""
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def drain(self) -> None:
        while self.pending or not self._idle.is_set():
            self._poke()
            await self._idle.wait()
            if self.pending and not self.healthy:
                return

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            batch, callbacks = self._take()
            if not batch:
                self._wake.clear()
                self._idle.set()
                continue
            started = time.perf_counter()
            self.in_flight = len(batch.executions)
            try:
                duplicates = await self.store.commit(batch, self.clock())
            except (StoreError, OSError) as exc:
                self.in_flight = 0
                self.healthy = False
                log.error("store commit failed: %s", exc)
                self._give_back(batch, callbacks, exc)
                await asyncio.sleep(RETRY_DELAY)
                continue
            self.in_flight = 0
            self.healthy = True
            self.metrics.store_commit.observe(time.perf_counter() - started)
            self.metrics.store_batch.observe(len(batch.executions) + len(batch.requests))
            for index, callback in enumerate(callbacks):
                if callback is not None:
                    callback(duplicates.get(index), None)
            if not self.pending:
                self._wake.clear()
                self._idle.set()

    def _take(self) -> tuple[Batch, list]:
        batch, callbacks = self.pending, self.callbacks
        if len(batch.executions) > MAX_BATCH:
            rest = Batch(executions=batch.executions[MAX_BATCH:])
            batch.executions = batch.executions[:MAX_BATCH]
            self.pending, self.callbacks = rest, callbacks[MAX_BATCH:]
            return batch, callbacks[:MAX_BATCH]
        self.pending, self.callbacks = Batch(), []
        return batch, callbacks

    def _give_back(self, batch: Batch, callbacks: list, exc: Exception) -> None:
        """New executions were never acknowledged: tell their requests (503).  Transitions
        and jobs of running work are kept and retried; the request log waits with them."""
        for callback in callbacks:
            if callback is not None:
                callback(None, exc)
        for change in batch.transitions.values():
            self.pending.transitions.setdefault(change.id, change)
        self.pending.jobs[:0] = batch.jobs
        self.pending.requests[:0] = batch.requests
